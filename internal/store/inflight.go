package store

import (
	"context"

	"google.golang.org/grpc"
)

// maxInFlight bounds the unary etcd calls (Range, Txn, Put, LeaseGrant,
// ...) one Store has outstanding; the others wait their turn before a
// gRPC stream is opened for them.
//
// All calls of a Store share one HTTP/2 connection. With ten thousand
// hosts joining at once, ten thousand concurrent calls on it deadlocked
// the gRPC transport: both sides' writers blocked on the full socket
// while both readers stopped reading to throttle their backlog of
// control frames (the pattern of grpc/grpc-go#4172), and the process sat
// idle with every etcd call waiting. A few hundred calls in flight keep
// etcd, which applies them one at a time anyway, just as busy.
const maxInFlight = 128

// inFlightLimit is a unary client interceptor letting at most cap(sem)
// calls through at once, each holding a slot of sem while it runs.
// Streams (watches, lease keep-alives) are not counted: they are few and
// long-lived.
func inFlightLimit(sem chan struct{}) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-sem }()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
