package middleware

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/metadata"
)

func metadataCtx(ctx context.Context, auth string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", auth)
}

func TestUsersFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "users")
	// AddUser with the real (default-cost) hash once.
	if err := AddUser(path, "alice", "pw-alice"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("users file mode %v, want 0600", st.Mode().Perm())
	}
	users, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if cost, _ := bcrypt.Cost([]byte(users["alice"])); cost != bcrypt.DefaultCost {
		t.Fatalf("hash cost %d, want %d", cost, bcrypt.DefaultCost)
	}
	if bcrypt.CompareHashAndPassword([]byte(users["alice"]), []byte("pw-alice")) != nil {
		t.Fatal("stored hash does not match the password")
	}

	// Comments and blank lines survive; adding bob appends, re-adding alice
	// replaces her line.
	old := users["alice"]
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append([]byte("# arrowquant users\n\n"), b...), 0o600); err != nil {
		t.Fatal(err)
	}
	hb, _ := hashPassword("pw-bob", bcrypt.MinCost)
	if err := addUserHash(path, "bob", hb); err != nil {
		t.Fatal(err)
	}
	ha, _ := hashPassword("pw-alice-2", bcrypt.MinCost)
	if err := addUserHash(path, "alice", ha); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	want := "# arrowquant users\n\nalice:" + ha + "\nbob:" + hb + "\n"
	if string(b) != want {
		t.Fatalf("users file =\n%s\nwant\n%s", b, want)
	}
	if strings.Contains(string(b), old) {
		t.Fatal("old alice hash still present")
	}

	// A malformed line is reported with file and line number, by LoadUsers,
	// NewServer and AddUser.
	if err := os.WriteFile(path, append(b, []byte("carol-without-hash\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"LoadUsers": func() error { _, err := LoadUsers(path); return err }(),
		"NewServer": func() error { _, _, err := NewServer(Config{AuthBasicFile: path}); return err }(),
		"AddUser":   addUserHash(path, "dave", hb),
	} {
		if err == nil || !strings.Contains(err.Error(), path+" line 5") {
			t.Errorf("%s: error %v, want one naming %s line 5", name, err, path)
		}
	}
	if err := os.WriteFile(path, []byte("eve:not-a-bcrypt-hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadUsers(path); err == nil || !strings.Contains(err.Error(), "line 1: user eve: not a bcrypt hash") {
		t.Errorf("bad hash: %v", err)
	}
	if err := os.WriteFile(path, []byte("eve:"+hb+"\neve:"+hb+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadUsers(path); err == nil || !strings.Contains(err.Error(), "line 2: user eve appears twice") {
		t.Errorf("duplicate user: %v", err)
	}
	if err := os.WriteFile(path, []byte("# nobody\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadUsers(path); err == nil || !strings.Contains(err.Error(), "has no users") {
		t.Errorf("empty users file: %v", err)
	}

	for _, bad := range []string{"", "a:b", "a b", "#x"} {
		if err := AddUser(path, bad, "pw"); err == nil {
			t.Errorf("AddUser accepted user name %q", bad)
		}
	}
	if err := AddUser(path, "frank", ""); err == nil {
		t.Error("AddUser accepted an empty password")
	}
	if _, err := HashPassword(strings.Repeat("x", 73)); err == nil || !strings.Contains(err.Error(), "at most 72") {
		t.Errorf("73-byte password: %v", err)
	}
}
