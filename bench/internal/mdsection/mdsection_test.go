package mdsection

import "testing"

func TestReplace(t *testing.T) {
	doc := "a\n" + Wrap("x", "old\n") + "\nb " + Wrap("y", "one") + ".\n"
	got, err := Replace(doc, "x", "new\n")
	if err != nil {
		t.Fatal(err)
	}
	if got, err = Replace(got, "y", "two"); err != nil {
		t.Fatal(err)
	}
	want := "a\n<!-- BEGIN generated: x -->\nnew\n<!-- END generated: x -->\nb <!-- BEGIN generated: y -->two<!-- END generated: y -->.\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if s, ok := Extract(got, "y"); !ok || s != Wrap("y", "two") {
		t.Fatalf("Extract: %q %v", s, ok)
	}
	if _, err := Replace(got, "z", ""); err == nil {
		t.Fatal("a missing section must be an error")
	}
}
