package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kanga-run/kanga/api"
)

// readEnvFiles reads --env-file files in order; a later file's variable
// replaces an earlier one's.
func readEnvFiles(paths []string, lookupEnv func(string) (string, bool)) ([]api.EnvVar, error) {
	var env []api.EnvVar
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("--env-file: %w", err)
		}
		vars, err := parseEnvFile(p, f, lookupEnv)
		f.Close()
		if err != nil {
			return nil, err
		}
		env = mergeEnv(env, vars)
	}
	return env, nil
}

// parseEnvFile parses docker's env-file format: one KEY=VALUE a line,
// taken literally (no quotes, no expansion); blank lines and lines whose
// first non-blank character is # are skipped; KEY alone copies the
// caller's variable. name is the file's name for the errors.
func parseEnvFile(name string, r io.Reader, lookupEnv func(string) (string, bool)) ([]api.EnvVar, error) {
	var env []api.EnvVar
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimLeft(sc.Text(), " \t")
		if n == 1 {
			line = strings.TrimPrefix(line, "\uFEFF")
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, hasValue := strings.Cut(line, "=")
		if !hasValue {
			key = strings.TrimRight(key, " \t\r")
		}
		if key == "" || strings.ContainsAny(key, " \t\r") {
			return nil, fmt.Errorf("--env-file %s line %d: invalid variable name %q: expected KEY=VALUE", name, n, key)
		}
		if !hasValue {
			var ok bool
			if value, ok = lookupEnv(key); !ok {
				return nil, fmt.Errorf("--env-file %s line %d: %s is not set in your environment (KEY alone copies it)", name, n, key)
			}
		}
		env = append(env, api.EnvVar{Name: key, Value: strings.TrimSuffix(value, "\r")})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--env-file %s: %w", name, err)
	}
	return env, nil
}

// mergeEnv returns base with over applied: a variable of over replaces
// base's of the same name in place, new ones are appended in order.
func mergeEnv(base, over []api.EnvVar) []api.EnvVar {
	if len(over) == 0 {
		return base
	}
	at := make(map[string]int, len(base))
	out := make([]api.EnvVar, 0, len(base)+len(over))
	for _, e := range append(append([]api.EnvVar(nil), base...), over...) {
		if i, ok := at[e.Name]; ok {
			out[i] = e
			continue
		}
		at[e.Name] = len(out)
		out = append(out, e)
	}
	return out
}
