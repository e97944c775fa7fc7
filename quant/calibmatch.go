package quant

// TensorLister is a Source that knows all its tensors before the first
// Next (a model directory): calibration data is then checked against the
// model before any tensor is quantized.
type TensorLister interface {
	Tensors() []TensorMeta
}

func (s *modelSource) Tensors() []TensorMeta {
	out := make([]TensorMeta, len(s.m.Tensors))
	for i, t := range s.m.Tensors {
		out[i] = (&modelTensor{m: s.m, info: t}).Meta()
	}
	return out
}

// matchCalibration checks the calibration layers against the model's
// tensors: a *calib.MismatchError when the data belongs to another model,
// else a warning naming the layers that have no weight (once).
func (p *pipeline) matchCalibration(res *Result, metas []TensorMeta) error {
	if p.calib == nil || p.calibMatched {
		return nil
	}
	shapes := make(map[string][]int64, len(metas))
	for _, m := range metas {
		shapes[m.Name] = m.Shape
	}
	mr, err := p.calib.Match(func(name string) ([]int64, bool) { s, ok := shapes[name]; return s, ok })
	if err != nil {
		return err
	}
	p.calibMatched = true
	if w := p.calib.MissingWarning(mr.Missing); w != "" {
		res.Warnings = append(res.Warnings, w)
	}
	return nil
}

// checkCalibration matches the calibration data against the tensors the
// run has seen, for a source that could not list them up front (DoPut).
func (p *pipeline) checkCalibration(res *Result) error {
	metas := make([]TensorMeta, len(res.Layers))
	for i, l := range res.Layers {
		metas[i] = TensorMeta{Name: l.Name, Shape: l.Shape}
	}
	return p.matchCalibration(res, metas)
}

var _ TensorLister = (*modelSource)(nil)
