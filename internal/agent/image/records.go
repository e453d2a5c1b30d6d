package image

import (
	"context"
	"fmt"
	"strings"

	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"

	"github.com/kanga-run/kanga/errdefs"
)

// Image records: containerd keys an image record by its name alone, so
// each tenant's image is its own record, named RecordName(tenant, name)
// and labelled OwnerLabel=tenant. Two tenants may then hold different
// content under one image name, and neither can replace, remove or see
// the other's record. Content and snapshots stay shared by digest in the
// one namespace (containerd stores a blob and an unpacked layer once
// however many records point at them), so an image both tenants hold
// costs its space once; who may reach which content is checked when a
// record is made (see possession.go).

// OwnerLabel names the tenant an image record belongs to.
const OwnerLabel = "kanga.dev/tenant"

// legacyTenantLabelPrefix prefixed the labels of the records from before
// per-tenant records: one record per image name, shared by the tenants
// labelled on it. Migrate turns them into per-tenant records.
const legacyTenantLabelPrefix = "kanga.dev/tenant."

// RecordName is the name of tenant's record of the normalized image name.
// "@" cannot follow a tenant name in a normalized reference (which always
// has a registry host and a "/" before any "@"), so no record name of
// this form equals a reference, and the form splits one way only.
func RecordName(tenant, name string) string { return tenant + "@" + name }

// ParseRecordName splits a record name made by RecordName. ok is false
// for any other name, such as a record from before per-tenant records.
func ParseRecordName(rec string) (tenant, name string, ok bool) {
	tenant, name, found := strings.Cut(rec, "@")
	if !found || !tenantRe.MatchString(tenant) {
		return "", "", false
	}
	if norm, err := Normalize(name); err != nil || norm != name {
		return "", "", false
	}
	return tenant, name, true
}

// ownedBy reports whether rec is tenant's record, by its name and label
// both (a record that says one thing in its name and another in its
// label was not made here, and belongs to no tenant).
func ownedBy(rec images.Image, tenant string) (name string, ok bool) {
	t, name, ok := ParseRecordName(rec.Name)
	if !ok || t != tenant || rec.Labels[OwnerLabel] != tenant {
		return "", false
	}
	return name, true
}

// displayName is the image name a record holds for its tenant, as the
// tenant wrote it (normalized).
func displayName(rec images.Image) string {
	if _, name, ok := ParseRecordName(rec.Name); ok {
		return name
	}
	return rec.Name
}

// ownerFilter selects the records labelled for tenant (a valid tenant
// name needs no quoting beyond %q).
func ownerFilter(tenant string) string { return fmt.Sprintf(`labels.%q==%q`, OwnerLabel, tenant) }

// Migrate turns the records from before per-tenant records (one shared
// record per image name, with a label per tenant) into one record per
// tenant with the same target, then removes the shared record. Content
// and snapshots are untouched: the new records point at them before the
// old one goes, so the garbage collector never sees them unreferenced,
// and running instances, warm containers and later starts resolve the
// same content as before. A tenant that already has a record of the name
// (a migration that stopped halfway) keeps it. Records with no tenant
// label are not Kanga's and stay. The agent calls it once at start,
// before anything resolves an image; it is idempotent. It returns how
// many old records it migrated.
func (s *Service) Migrate(ctx context.Context) (int, error) {
	ctx = withNamespace(ctx)
	is := s.client.ImageService()
	recs, err := is.List(ctx)
	if err != nil {
		return 0, classify("list images to migrate", err)
	}
	migrated := 0
	for _, old := range recs {
		if _, _, ok := ParseRecordName(old.Name); ok {
			continue
		}
		tenants := legacyTenants(old.Labels)
		if len(tenants) == 0 {
			continue
		}
		name, err := Normalize(old.Name)
		if err != nil || name != old.Name {
			s.log.Warn("leaving an image record whose name is not a normalized reference", "record", old.Name)
			continue
		}
		for _, t := range tenants {
			rec := images.Image{Name: RecordName(t, name), Target: old.Target, Labels: recordLabels(old.Labels, t)}
			if _, err := is.Create(ctx, rec); err != nil && !cerrdefs.IsAlreadyExists(err) {
				return migrated, classify("migrate image "+name+" of tenant "+t, err)
			}
		}
		if err := is.Delete(ctx, old.Name); err != nil && !cerrdefs.IsNotFound(err) {
			return migrated, classify("remove the shared record of image "+name, err)
		}
		migrated++
		s.log.Info("image record split per tenant", "image", name, "digest", old.Target.Digest, "tenants", tenants)
	}
	if migrated > 0 {
		s.notify()
	}
	return migrated, nil
}

// legacyTenants returns the valid tenant names labelled on a shared
// record from before per-tenant records.
func legacyTenants(labels map[string]string) []string {
	var ts []string
	for k, v := range labels {
		t, ok := strings.CutPrefix(k, legacyTenantLabelPrefix)
		if ok && v == "1" && tenantRe.MatchString(t) {
			ts = append(ts, t)
		}
	}
	return ts
}

// recordLabels returns the labels of tenant's record: the owner, and
// whatever else a record carried (containerd's own, say) but the tenant
// labels of a shared record.
func recordLabels(from map[string]string, tenant string) map[string]string {
	labels := map[string]string{OwnerLabel: tenant}
	for k, v := range from {
		if k != OwnerLabel && !strings.HasPrefix(k, legacyTenantLabelPrefix) {
			labels[k] = v
		}
	}
	return labels
}

func checkTenant(tenant string) error {
	if !tenantRe.MatchString(tenant) {
		return fmt.Errorf("tenant %q is not a valid tenant name: %w", tenant, errdefs.ErrInvalidArgument)
	}
	return nil
}
