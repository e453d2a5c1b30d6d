package api

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// Exec runs over an HTTP connection upgraded to the "kanga-stream/1"
// protocol. Both directions carry frames: one byte naming the stream, three
// zero bytes, a big-endian uint32 payload length and the payload. This is
// docker's attach framing, extended with control frames, so that stdout,
// stderr, the exit code and terminal resizes share one connection.
const StreamProtocol = "kanga-stream/1"

// Stream identifiers.
const (
	StreamStdin      byte = 0 // client -> server: data for the process
	StreamStdout     byte = 1 // server -> client
	StreamStderr     byte = 2 // server -> client
	StreamExit       byte = 3 // server -> client: ExitStatus as JSON, last frame
	StreamStdinClose byte = 4 // client -> server: stdin reached EOF
	StreamResize     byte = 5 // client -> server: TerminalSize as JSON
	StreamError      byte = 6 // server -> client: Error as JSON, last frame
)

// maxFrame bounds a frame's payload so a corrupt header cannot make a peer
// allocate gigabytes.
const maxFrame = 1 << 20

// ExitStatus is the payload of a StreamExit frame.
type ExitStatus struct {
	ExitCode int `json:"exitCode"`
}

// TerminalSize is the payload of a StreamResize frame.
type TerminalSize struct {
	Width  uint16 `json:"width"`
	Height uint16 `json:"height"`
}

// FrameWriter writes frames; it is safe for concurrent use.
type FrameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewFrameWriter returns a FrameWriter on w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// WriteFrame writes one frame.
func (f *FrameWriter) WriteFrame(stream byte, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(p) > maxFrame {
		if err := f.write(stream, p[:maxFrame]); err != nil {
			return err
		}
		p = p[maxFrame:]
	}
	return f.write(stream, p)
}

func (f *FrameWriter) write(stream byte, p []byte) error {
	var hdr [8]byte
	hdr[0] = stream
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(p)))
	if _, err := f.w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := f.w.Write(p)
	return err
}

// WriteJSON writes v as the payload of one frame.
func (f *FrameWriter) WriteJSON(stream byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return f.WriteFrame(stream, b)
}

// StreamWriter returns an io.Writer whose writes become frames of stream.
func (f *FrameWriter) StreamWriter(stream byte) io.Writer {
	return streamWriter{f: f, stream: stream}
}

type streamWriter struct {
	f      *FrameWriter
	stream byte
}

func (s streamWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.f.WriteFrame(s.stream, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ReadFrame reads one frame from r.
func ReadFrame(r io.Reader) (stream byte, payload []byte, err error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[4:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("stream frame of %d bytes exceeds the %d byte limit", n, maxFrame)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[0], payload, nil
}
