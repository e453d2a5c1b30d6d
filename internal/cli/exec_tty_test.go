//go:build linux

package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/api"
)

// TestExecTTY runs `exec -it` with a pseudo-terminal as stdin: the CLI must
// send the terminal's size first and forward keystrokes unbuffered (raw
// mode: a line without newline still arrives).
func TestExecTTY(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 33, Cols: 111}); err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("tty") != "true" || r.URL.Query().Get("stdin") != "true" {
			writeTestError(w, 400, "InvalidArgument", "want tty and stdin: "+r.URL.RawQuery)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", api.StreamProtocol)
		rw.Flush()
		stream, p, err := api.ReadFrame(rw.Reader)
		if err != nil || stream != api.StreamResize {
			t.Errorf("first frame %d %q %v, want the terminal size", stream, p, err)
			return
		}
		var size api.TerminalSize
		json.Unmarshal(p, &size)
		if canonical(t, tty) {
			t.Error("the terminal is in canonical mode during exec -t, want raw")
			return
		}
		var input []byte
		for !strings.Contains(string(input), "q") {
			stream, p, err := api.ReadFrame(rw.Reader)
			if err != nil {
				t.Errorf("reading stdin: %v", err)
				return
			}
			if stream == api.StreamStdin {
				input = append(input, p...)
			}
		}
		fw := api.NewFrameWriter(rw)
		fw.WriteFrame(api.StreamStdout, []byte(fmt.Sprintf("size=%dx%d input=%q", size.Width, size.Height, input)))
		fw.WriteJSON(api.StreamExit, api.ExitStatus{ExitCode: 0})
		rw.Flush()
	}))
	defer srv.Close()
	t.Setenv("KANGA_ADDR", srv.URL)
	t.Setenv("KANGA_TOKEN", fakeToken)
	t.Setenv("KANGA_CONFIG", filepath.Join(t.TempDir(), "none.json"))

	// Raw mode lets a keystroke through without a newline.
	if _, err := ptmx.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	root := NewRootCommand()
	root.SetArgs([]string{"exec", "-it", "web", "sh"})
	root.SetIn(tty)
	root.SetOut(&out)
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if want := `size=111x33 input="q"`; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	if !canonical(t, tty) {
		t.Error("the terminal was not restored after exec")
	}
}

func canonical(t *testing.T, tty *os.File) bool {
	tios, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tios.Lflag&unix.ICANON != 0
}
