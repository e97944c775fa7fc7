package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The committed assembly is this generator's output (run go generate
// ./kernels/internal/groupfit after changing the generator).
func TestGenerated(t *testing.T) {
	for name, want := range Files() {
		got, err := os.ReadFile(filepath.Join("..", "..", "..", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not the generator's output: run go generate ./kernels/internal/groupfit", name)
		}
	}
}

// The WORD encodings are GNU as's for the same instructions.
func TestEncodings(t *testing.T) {
	as, err := exec.LookPath("aarch64-linux-gnu-as")
	if err != nil {
		t.Skip("aarch64-linux-gnu-as not installed (Debian: binutils-aarch64-linux-gnu)")
	}
	dump, err := exec.LookPath("aarch64-linux-gnu-objdump")
	if err != nil {
		t.Skip("aarch64-linux-gnu-objdump not installed")
	}
	var src strings.Builder
	var want []uint32
	for _, op := range []neonOp{fadd, fsub, fmul, fmax, fmin, addv, frintz, fcvtzs, scvtf, smax, smin, fmla, cmlt0, fadd2d, fmul2d, fmla2d, fcvtl, fcvtl2} {
		for _, r := range [][3]int{{0, 1, 2}, {31, 30, 29}, {7, 18, 25}} {
			src.WriteString(op.asm(r[0], r[1], r[2]) + "\n")
			want = append(want, op.enc(r[0], r[1], r[2]))
		}
	}
	src.WriteString("fmov v24.4s, #0.5\n")
	want = append(want, fmovHalf|24)
	dir := t.TempDir()
	s, o := filepath.Join(dir, "x.s"), filepath.Join(dir, "x.o")
	if err := os.WriteFile(s, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(as, s, "-o", o).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	out, err := exec.Command(dump, "-d", o).Output()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.HasSuffix(f[0], ":") && len(f[1]) == 8 {
			got = append(got, f[1])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d instructions assembled, want %d:\n%s", len(got), len(want), out)
	}
	for i, w := range want {
		if g := got[i]; g != strings.ToLower(strings.TrimLeft(fmtHex(w), "0x")) && g != fmtHex(w)[2:] {
			t.Errorf("instruction %d: GNU as %s, generator %s", i, g, fmtHex(w))
		}
	}
}

func fmtHex(w uint32) string {
	const digits = "0123456789abcdef"
	b := []byte("0x00000000")
	for i := 0; i < 8; i++ {
		b[9-i] = digits[w>>(4*i)&0xf]
	}
	return string(b)
}
