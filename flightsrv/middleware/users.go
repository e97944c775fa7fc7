package middleware

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// HashPassword returns the bcrypt hash (default cost) of pw for a users file.
func HashPassword(pw string) (string, error) {
	return hashPassword(pw, bcrypt.DefaultCost)
}

func hashPassword(pw string, cost int) (string, error) {
	if pw == "" {
		return "", errors.New("empty password")
	}
	if len(pw) > 72 {
		return "", fmt.Errorf("password is %d bytes long; bcrypt accepts at most 72", len(pw))
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	if err != nil {
		return "", err
	}
	return string(h), nil
}

func validUserName(user string) error {
	switch {
	case user == "":
		return errors.New("empty user name")
	case strings.ContainsAny(user, ": \t\r\n"):
		return fmt.Errorf("user name %q must not contain ':' or white space", user)
	case strings.HasPrefix(user, "#"):
		return fmt.Errorf("user name %q must not start with '#'", user)
	}
	return nil
}

// AddUser writes user with the bcrypt hash of password to the users file at
// path: it creates the file (mode 0600) or replaces that user's line, keeping
// every other line. The file is replaced atomically. An existing file with a
// malformed line is left alone and reported.
func AddUser(path, user, password string) error {
	if err := validUserName(user); err != nil {
		return err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	return addUserHash(path, user, hash)
}

func addUserHash(path, user, hash string) error {
	mode := fs.FileMode(0o600)
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err != nil:
		return fmt.Errorf("users file: %w", err)
	default:
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
		if _, err := parseUsers(path, old); err != nil {
			return err
		}
	}
	entry := user + ":" + hash
	var out bytes.Buffer
	replaced := false
	sc := bufio.NewScanner(bytes.NewReader(old))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && !strings.HasPrefix(strings.TrimSpace(line), "#") && name == user {
			if replaced {
				continue // drop duplicates of the same user
			}
			line, replaced = entry, true
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("users file %s: %w", path, err)
	}
	if !replaced {
		out.WriteString(entry)
		out.WriteByte('\n')
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("users file: %w", err)
	}
	if _, err := tmp.Write(out.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("users file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("users file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	return nil
}

// LoadUsers reads a users file: one "user:bcrypt-hash" a line, '#' comments
// and blank lines ignored. It returns user -> hash; a malformed line is an
// error naming the file and line number.
func LoadUsers(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	users, err := parseUsers(path, b)
	if err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("users file %s has no users (add one with `arrowquant users add %s USER`)", path, path)
	}
	return users, nil
}

func parseUsers(path string, b []byte) (map[string]string, error) {
	users := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("users file %s line %d: expected user:bcrypt-hash", path, n)
		}
		if err := validUserName(user); err != nil {
			return nil, fmt.Errorf("users file %s line %d: %w", path, n, err)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("users file %s line %d: user %s: not a bcrypt hash: %w", path, n, user, err)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("users file %s line %d: user %s appears twice", path, n, user)
		}
		users[user] = hash
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("users file %s after line %d: %w", path, n, err)
	}
	return users, nil
}
