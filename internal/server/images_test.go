package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// progressLines decodes an NDJSON progress stream strictly.
func progressLines(t *testing.T, r response) []api.Progress {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type = %q, want application/x-ndjson", ct)
	}
	var out []api.Progress
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var p api.Progress
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("progress line %q: %v", sc.Bytes(), err)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		t.Fatalf("empty progress stream: %s", r)
	}
	return out
}

func TestListImages(t *testing.T) {
	e := newEnv(t, 0)
	r := e.do(t, "GET", "/v1/images", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	var list api.ImageList
	decode(t, r, &list)
	want := []api.Image{fakeImage(imgBusybox), fakeImage(imgScratch)}
	if !reflect.DeepEqual(list.Items, want) {
		t.Errorf("images = %+v, want %+v", list.Items, want)
	}
	imgs, err := e.client(e.a).ListImages(t.Context())
	if err != nil || !reflect.DeepEqual(imgs, want) {
		t.Errorf("SDK ListImages = %+v, %v", imgs, err)
	}
}

func TestImportImage(t *testing.T) {
	e := newEnv(t, 0)
	r := e.do(t, "POST", "/v1/images/import", e.a.token, "", "Content-Type", "application/x-tar")
	// An empty archive fails before the stream starts: an ordinary error
	// response, with its status.
	wantError(t, r, http.StatusBadRequest, "InvalidArgument", "the archive is empty")

	// A failure once progress went out is the stream's last line; the SDK
	// returns it as an error of its class.
	late := strings.Repeat("l", lateFailureSize)
	req, err := http.NewRequestWithContext(t.Context(), "POST", e.url+"/v1/images/import", strings.NewReader(late))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.a.token)
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	lines := progressLines(t, response{status: resp.StatusCode, header: resp.Header, body: body})
	if last := lines[len(lines)-1]; resp.StatusCode != http.StatusOK || last.Error == nil || last.Error.Code != "InvalidArgument" || last.Done {
		t.Errorf("late failure: %d, last line %+v; want 200 and an InvalidArgument error line", resp.StatusCode, last)
	}
	if _, err := e.client(e.a).ImportImage(t.Context(), strings.NewReader(late), -1, nil); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "layer sha256:0 is missing") {
		t.Errorf("SDK ImportImage of a late failure = %v, want the InvalidArgument error", err)
	}
	if _, err := e.client(e.a).ImportImage(t.Context(), strings.NewReader(""), 0, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("SDK ImportImage of an empty archive = %v, want InvalidArgument", err)
	}

	// The host reports progress before it has read the whole archive,
	// as the real one does. Both sizes matter: net/http treats the unread
	// rest of a body differently below and above 256 KiB once the handler
	// writes.
	for _, size := range []int{3000, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			archive := strings.Repeat("t", size)
			req, err := http.NewRequestWithContext(t.Context(), "POST", e.url+"/v1/images/import", strings.NewReader(archive))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+e.a.token)
			req.Header.Set("Content-Type", "application/x-tar")
			resp, err := e.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			lines := progressLines(t, response{status: resp.StatusCode, header: resp.Header, body: body})
			if len(lines) != 3 || lines[0].Status != "reading archive" || lines[1].Current != int64(size) {
				t.Errorf("progress = %+v, want the host's two lines, the second with all %d bytes read, and the final one", lines, size)
			}
			last := lines[len(lines)-1]
			if !last.Done || last.Error != nil || len(last.Images) != 1 || last.Images[0].Name != "kanga.test/imported:latest" {
				t.Errorf("last line = %+v, want done with the imported image", last)
			}
		})
	}

	// The SDK sees the same.
	archive := strings.Repeat("t", 1000)
	var seen []api.Progress
	imgs, err := e.client(e.a).ImportImage(t.Context(), strings.NewReader(archive), int64(len(archive)), func(p api.Progress) { seen = append(seen, p) })
	if err != nil || len(imgs) != 1 || len(seen) != 3 {
		t.Errorf("SDK ImportImage = %+v, %v; progress %+v", imgs, err, seen)
	}
}

func TestPullImage(t *testing.T) {
	e := newEnv(t, 0)
	tests := []struct {
		name   string
		body   string
		status int
		code   string
		msgs   []string
	}{
		{"empty ref", `{"ref":""}`, 400, "InvalidArgument", []string{"ref is empty"}},
		{"no ref", `{}`, 400, "InvalidArgument", []string{"ref is empty"}},
		{"empty body", ``, 400, "InvalidArgument", []string{"empty"}},
		{"unknown field", `{"ref":"x","platform":"arm64"}`, 400, "InvalidArgument", []string{"platform"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, "POST", "/v1/images/pull", e.a.token, tt.body)
			wantError(t, r, tt.status, tt.code, tt.msgs...)
		})
	}

	t.Run("pulled", func(t *testing.T) {
		const ref = "127.0.0.1:5000/busybox:latest"
		r := e.do(t, "POST", "/v1/images/pull", e.a.token, `{"ref":"`+ref+`"}`)
		wantStatus(t, r, http.StatusOK)
		lines := progressLines(t, r)
		last := lines[len(lines)-1]
		if len(lines) != 3 || !last.Done || len(last.Images) != 1 || last.Images[0] != fakeImage(ref) {
			t.Errorf("progress = %+v, want two host lines and done with the image", lines)
		}
		img, err := e.client(e.a).PullImage(t.Context(), ref, nil)
		if err != nil || img != fakeImage(ref) {
			t.Errorf("SDK PullImage = %+v, %v", img, err)
		}
	})

	t.Run("failed", func(t *testing.T) {
		// At once, before any progress went out: an ordinary error
		// response.
		const ref = "kanga.test/missing:latest"
		r := e.do(t, "POST", "/v1/images/pull", e.a.token, `{"ref":"`+ref+`"}`)
		wantError(t, r, http.StatusNotFound, "NotFound", "manifest unknown")
		_, err := e.client(e.a).PullImage(t.Context(), ref, nil)
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("SDK PullImage = %v, want NotFound", err)
		}
	})
}

func TestGetImage(t *testing.T) {
	e := newEnv(t, 0)
	want := api.ImageDetail{
		Name: imgBusybox, Digest: fakeImage(imgBusybox).Digest, Size: 1234, CreatedAt: fakeImageTime,
		Cmd:   []string{"sh"},
		Hosts: []api.ImageHost{{Host: "fake-host", Digest: fakeImage(imgBusybox).Digest}},
	}
	// The reference is normalized as docker does: the tag defaults to
	// latest, and a slash travels escaped in one path segment.
	for _, ref := range []string{"kanga.test%2Fbusybox", "kanga.test%2Fbusybox:latest"} {
		r := e.do(t, "GET", "/v1/images/"+ref, e.a.token, "")
		wantStatus(t, r, http.StatusOK)
		var d api.ImageDetail
		decode(t, r, &d)
		if !reflect.DeepEqual(d, want) {
			t.Errorf("GET /v1/images/%s = %+v, want %+v", ref, d, want)
		}
	}
	d, err := e.client(e.a).GetImage(t.Context(), "kanga.test/busybox")
	if err != nil || !reflect.DeepEqual(d, want) {
		t.Errorf("SDK GetImage = %+v, %v", d, err)
	}
	// An image no host holds is 404, said once, and is not pulled.
	r := e.do(t, "GET", "/v1/images/kanga.test%2Fnosuch", e.a.token, "")
	wantError(t, r, http.StatusNotFound, "NotFound", "image kanga.test/nosuch:latest not found: kanga image ls lists your images")
	var er api.ErrorResponse
	decode(t, r, &er)
	if strings.HasSuffix(er.Error.Message, ": not found") {
		t.Errorf("message %q says not found twice", er.Error.Message)
	}
	if _, err := e.client(e.a).GetImage(t.Context(), "kanga.test/nosuch"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("SDK GetImage of a missing image = %v, want NotFound", err)
	}
	// A reference that is no reference names the field.
	r = e.do(t, "GET", "/v1/images/UPPER%20case", e.a.token, "")
	wantError(t, r, http.StatusBadRequest, "InvalidArgument")
	// Without a token: 401.
	r = e.do(t, "GET", "/v1/images/kanga.test%2Fbusybox", "", "")
	wantStatus(t, r, http.StatusUnauthorized)
}
