package calib

import (
	"errors"
	"strings"
	"testing"
)

func shapesOf(m map[string][]int64) func(string) ([]int64, bool) {
	return func(name string) ([]int64, bool) { s, ok := m[name]; return s, ok }
}

func TestMatchAgainstTheModel(t *testing.T) {
	p := writeAll(t, t.TempDir(), fixture())["jsonl"] // layers a, b with 4 channels
	st, err := Collect(p, Options{NumTimeGroups: 2, SamplesPerLayer: 8})
	if err != nil {
		t.Fatal(err)
	}
	// Both weights present with 4 input channels: all matched.
	mr, err := st.Match(shapesOf(map[string][]int64{"a.weight": {16, 4}, "b.weight": {8, 4}, "a.bias": {16}}))
	if err != nil || len(mr.Matched) != 2 || len(mr.Missing) != 0 {
		t.Fatalf("matched %v missing %v err %v", mr.Matched, mr.Missing, err)
	}
	// b missing (or a convolution): a warning, not an error.
	mr, err = st.Match(shapesOf(map[string][]int64{"a.weight": {16, 4}, "b.weight": {8, 4, 3, 3}}))
	if err != nil || len(mr.Matched) != 1 || strings.Join(mr.Missing, ",") != "b" {
		t.Fatalf("matched %v missing %v err %v", mr.Matched, mr.Missing, err)
	}
	w := st.MissingWarning(mr.Missing)
	if !strings.Contains(w, `1 of 2 layers`) || !strings.Contains(w, `"b"`) {
		t.Errorf("warning %q", w)
	}
	// Other input channels: the data is from another model.
	_, err = st.Match(shapesOf(map[string][]int64{"a.weight": {16, 8}, "b.weight": {8, 4}}))
	var me *MismatchError
	if !errors.As(err, &me) || me.Matched != 1 || me.Total != 1 {
		t.Fatalf("err %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `layer "a": activations of 4 values, weight "a.weight" has 8 input channels`) {
		t.Errorf("message %q", msg)
	}
	// No layer has a weight: every layer listed.
	_, err = st.Match(shapesOf(map[string][]int64{"model.x.weight": {4, 4}}))
	if !errors.As(err, &me) || me.Matched != 0 || me.Total != 2 || !strings.Contains(err.Error(), `no [out, in] tensor "a.weight"`) {
		t.Fatalf("err %v", err)
	}
}

func TestMismatchListsTheFirstFew(t *testing.T) {
	var rows []Row
	for i := 0; i < 12; i++ {
		rows = append(rows, Row{Layer: string(rune('a'+i)) + "x", Timestep: 1, Activation: []float32{1, 2}})
	}
	st, err := Collect(writeAll(t, t.TempDir(), rows)["jsonl"], Options{NumTimeGroups: 1, SamplesPerLayer: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Match(shapesOf(nil))
	var me *MismatchError
	if !errors.As(err, &me) || len(me.Mismatches) != maxListed || me.Total != 12 || !strings.Contains(err.Error(), "and 7 more") {
		t.Fatalf("err %v", err)
	}
}

func TestTimestepsOutsideTheModel(t *testing.T) {
	p := writeAll(t, t.TempDir(), fixture())["jsonl"] // timesteps 0..99
	if _, err := Collect(p, Options{NumTimeGroups: 2, SamplesPerLayer: 8, MaxTimestep: 99, TimestepFrom: "test"}); err != nil {
		t.Fatalf("in range: %v", err)
	}
	_, err := Collect(p, Options{NumTimeGroups: 2, SamplesPerLayer: 8, MaxTimestep: 50, TimestepFrom: "num_train_timesteps 50 in config.json"})
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Row != 102 || !strings.Contains(err.Error(), "timestep 51 is outside the model's range [0, 50] (num_train_timesteps 50 in config.json)") {
		t.Fatalf("err %v", err)
	}
	neg := []Row{{Layer: "a", Timestep: -1, Activation: []float32{1}}}
	_, err = Collect(writeAll(t, t.TempDir(), neg)["jsonl"], Options{NumTimeGroups: 1, SamplesPerLayer: 1, MaxTimestep: 1000})
	if !errors.As(err, &fe) || fe.Row != 0 {
		t.Fatalf("negative timestep: %v", err)
	}
}

func TestFewerRowsThanCalibrationSamples(t *testing.T) {
	p := writeAll(t, t.TempDir(), fixture())["jsonl"] // 100 rows per layer
	st, err := Collect(p, Options{NumTimeGroups: 2, SamplesPerLayer: 100})
	if err != nil {
		t.Fatal(err)
	}
	if w := st.ShortWarning(100); w != "" {
		t.Errorf("100 rows for 100 samples: %q", w)
	}
	st, err = Collect(p, Options{NumTimeGroups: 2, SamplesPerLayer: 150})
	if err != nil {
		t.Fatal(err)
	}
	w := st.ShortWarning(150)
	if !strings.Contains(w, "2 of 2 layers have fewer rows than calibration_samples 150 (as few as 100)") {
		t.Errorf("warning %q", w)
	}
	if st.Layers["a"].RowsAvailable != 100 {
		t.Errorf("rows available %d", st.Layers["a"].RowsAvailable)
	}
}

func TestCheckWeightRefusesAtOnce(t *testing.T) {
	p := writeAll(t, t.TempDir(), fixture()) // layers a, b with 4 channels
	st, err := Collect(p["jsonl"], Options{NumTimeGroups: 1, SamplesPerLayer: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := range []struct {
		name  string
		shape []int64
	}{{"a.weight", []int64{7, 4}}, {"a.bias", []int64{7}}, {"c.weight", []int64{2, 9}}, {"b.weight", []int64{3, 4, 1, 1}}} {
		if err := st.CheckWeight(ok.name, ok.shape); err != nil {
			t.Errorf("%s %v: %v", ok.name, ok.shape, err)
		}
	}
	err = st.CheckWeight("b.weight", []int64{3, 5})
	var me *MismatchError
	if !errors.As(err, &me) || me.Matched != -1 || !strings.Contains(err.Error(), `each layer's input must match a weight`) ||
		!strings.Contains(err.Error(), `layer "b": activations of 4 values, weight "b.weight" has 5 input channels`) {
		t.Fatalf("err %v", err)
	}
}
