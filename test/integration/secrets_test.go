package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/secretkeys"
)

// TestSecretsAndConfigs drives secrets and configs through the CLI of a
// real kanga up and reads its etcd with the plain etcd client, as a dump
// or a backup would: a secret's value must not be there in the clear, a
// config's (the control) must.
func TestSecretsAndConfigs(t *testing.T) {
	p := startPlatform(t)
	p.importImages()
	const secretMarker = "it-secret-marker-5d1e"
	const configMarker = "it-config-marker-0b7a"

	pw := filepath.Join(t.TempDir(), "pw.txt")
	if err := os.WriteFile(pw, []byte(secretMarker), 0o600); err != nil {
		t.Fatal(err)
	}
	p.must("secret", "create", "db", "--from-file", "password="+pw, "--from-literal", "user=app")
	p.must("config", "create", "app", "--from-literal", "LEVEL="+configMarker)

	// The key file is made on first use, private, in the data dir.
	keyFile := filepath.Join(p.dataDir, secretkeys.FileName)
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatalf("key file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}

	// ls and inspect show keys and sizes, never the value.
	out := p.must("secret", "ls")
	if !strings.Contains(out, "db") || !strings.Contains(out, "password,user") || strings.Contains(out, secretMarker) {
		t.Errorf("secret ls:\n%s", out)
	}
	out = p.must("secret", "inspect", "db")
	var secs []api.Secret
	if err := json.Unmarshal([]byte(out), &secs); err != nil || len(secs) != 1 || secs[0].Data != nil ||
		secs[0].Keys[0] != (api.ObjectKey{Name: "password", Size: len(secretMarker)}) {
		t.Errorf("secret inspect: %v\n%s", err, out)
	}
	if strings.Contains(out, secretMarker) || strings.Contains(out, b64(secretMarker)) {
		t.Errorf("secret inspect prints the value:\n%s", out)
	}
	revealed := func() string {
		out := p.must("secret", "inspect", "--reveal", "db")
		var secs []api.Secret
		if err := json.Unmarshal([]byte(out), &secs); err != nil || len(secs) != 1 {
			t.Fatalf("secret inspect --reveal: %v\n%s", err, out)
		}
		return string(secs[0].Data["password"])
	}
	if got := revealed(); got != secretMarker {
		t.Errorf("revealed %q, want %q", got, secretMarker)
	}
	out = p.must("config", "inspect", "app")
	var cfgs []api.Config
	if err := json.Unmarshal([]byte(out), &cfgs); err != nil || len(cfgs) != 1 || string(cfgs[0].Data["LEVEL"]) != configMarker {
		t.Errorf("config inspect: %v\n%s", err, out)
	}

	// The raw etcd keys: no secret in the clear anywhere; the config is.
	raw, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(p.dataDir, "etcd.sock")}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	dump := func() (secretKeyID string) {
		resp, err := raw.Get(t.Context(), "/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		var sawSecret, sawConfig bool
		for _, kv := range resp.Kvs {
			if bytes.Contains(kv.Value, []byte(secretMarker)) || bytes.Contains(kv.Value, []byte(b64(secretMarker))) {
				t.Errorf("etcd key %s holds the secret's value in the clear", kv.Key)
			}
			switch string(kv.Key) {
			case "/kanga/secrets/default/db":
				sawSecret = true
				var rec struct {
					KeyID string `json:"keyId"`
				}
				if err := json.Unmarshal(kv.Value, &rec); err != nil || rec.KeyID == "" {
					t.Errorf("secret record without a key ID: %v: %s", err, kv.Value)
				}
				secretKeyID = rec.KeyID
			case "/kanga/configs/default/app":
				sawConfig = bytes.Contains(kv.Value, []byte(configMarker))
			}
		}
		if !sawSecret || !sawConfig {
			t.Fatalf("etcd dump: secret record found %v, config record with its value in the clear %v", sawSecret, sawConfig)
		}
		return secretKeyID
	}
	before := dump()

	// Env from a config and from a secret reach the container (the
	// secret's resolved by the host at start, TestSecretAndConfigFiles).
	r := p.kanga("run", "--rm", "--env-from-config", "app", "kanga.test/busybox", "sh", "-c", "echo LEVEL=$LEVEL")
	if r.code != 0 || !strings.Contains(r.stdout, "LEVEL="+configMarker) {
		t.Errorf("run --env-from-config: %+v", r)
	}
	r = p.kanga("run", "--rm", "--env-from-secret", "db", "kanga.test/busybox", "sh", "-c", "echo user=$user")
	if r.code != 0 || !strings.Contains(r.stdout, "user=app") {
		t.Errorf("run --env-from-secret: %+v", r)
	}
	r = p.kanga("run", "--rm", "--secret", "nope:/etc/nope", "kanga.test/busybox", "true")
	if r.code == 0 || !strings.Contains(r.stderr, `spec.volumes[0].secret.name: secret "nope" does not exist`) {
		t.Errorf("run --secret of a missing secret: %+v", r)
	}

	// Rotation: a new key, the record re-encrypted with it, the value
	// intact, the old key gone from the file.
	out = p.must("secret", "rotate-key")
	if !strings.Contains(out, "1 secrets re-encrypted") || !strings.Contains(out, "retired "+before) {
		t.Errorf("secret rotate-key: %s", out)
	}
	if after := dump(); after == before {
		t.Errorf("secret still under key %s after rotation", before)
	}
	if got := revealed(); got != secretMarker {
		t.Errorf("after rotation revealed %q, want %q", got, secretMarker)
	}
	b, err := os.ReadFile(keyFile)
	if err != nil || strings.Contains(string(b), `"`+before+`"`) {
		t.Errorf("key file still holds the retired key %s (%v)", before, err)
	}

	// Update, then rm; ls is empty afterwards.
	p.must("secret", "update", "db", "--from-literal", "token=t")
	out = p.must("secret", "inspect", "db")
	if !strings.Contains(out, `"token"`) || strings.Contains(out, `"password"`) {
		t.Errorf("after update: %s", out)
	}
	p.must("secret", "rm", "db")
	p.must("config", "rm", "app")
	if out := p.must("secret", "ls"); strings.Contains(out, "db") {
		t.Errorf("secret ls after rm:\n%s", out)
	}
	if r := p.kanga("secret", "inspect", "db"); r.code == 0 || !strings.Contains(r.stderr, `secret "db" not found`) {
		t.Errorf("inspect after rm: %+v", r)
	}

	// Never logged: kanga up's log has no value.
	if log, err := os.ReadFile(p.logPath); err != nil || bytes.Contains(log, []byte(secretMarker)) {
		t.Errorf("kanga up's log holds the secret's value (or cannot be read: %v)", err)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
