package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// maxUIDLen is the length of an instance UID (model.NewUID: 8 bytes in
// hex); a longer reference cannot be a UID or a prefix of one.
const maxUIDLen = 16

// resolveInstanceRef rewrites the {name} of an instance route to the name
// of the tenant's instance it refers to, as docker resolves a container
// reference: a name first, else a whole UID or a unique prefix of one.
// A prefix of several UIDs is refused, naming the candidates.
func (s *Server) resolveInstanceRef(r *http.Request) error {
	ref := r.PathValue("name")
	if !isUIDPrefix(ref) {
		// Not a UID: the handler's own lookup reports a missing name.
		return nil
	}
	name, err := s.instanceNameFor(r.Context(), ref)
	if err != nil {
		return err
	}
	r.SetPathValue("name", name)
	return nil
}

func (s *Server) instanceNameFor(ctx context.Context, ref string) (string, error) {
	_, err := s.store.GetInstance(ctx, ref)
	if err == nil || !errors.Is(err, errdefs.ErrNotFound) {
		return ref, err
	}
	notFound := err
	list, err := s.store.ListInstances(ctx)
	if err != nil {
		return "", err
	}
	var found []api.Instance
	for _, inst := range list {
		if strings.HasPrefix(inst.UID, ref) {
			found = append(found, inst)
		}
	}
	switch len(found) {
	case 0:
		return "", notFound
	case 1:
		return found[0].Name, nil
	}
	matches := make([]string, 0, len(found))
	for _, inst := range found {
		matches = append(matches, fmt.Sprintf("%s (%s)", inst.Name, inst.UID))
	}
	slices.Sort(matches)
	return "", fmt.Errorf("instance reference %q is ambiguous: it begins the UIDs of %s; give more of the UID, or the name: %w",
		ref, strings.Join(matches, ", "), errdefs.ErrInvalidArgument)
}

// isUIDPrefix reports whether ref could be a UID or the start of one.
func isUIDPrefix(ref string) bool {
	if ref == "" || len(ref) > maxUIDLen {
		return false
	}
	for _, c := range ref {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
