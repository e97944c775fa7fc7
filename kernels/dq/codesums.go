package dq

// maxInv bounds 1/s for codeSums: |v-b|·inv stays far below 2^63 for
// any fp16-range v and b, so codeSumsGo's int64 conversion is exact and
// clamping before or after truncation agrees. Sub-blocks with smaller
// scales take stats' scalar loop.
const maxInv = 1e10

// codeSumsGo is the portable codeSums: for every element (len(x) a
// multiple of 8) the code c = clamp(trunc(float32((v-b)·inv) + 0.5), 0,
// qmax) (float32 operations, no fused multiply-add), returning Σc and
// Σc² (exact: small integers) and Σv·c accumulated in float32 in 8 lanes
// (element i in lane i%8, in order).
func codeSumsGo(x []float32, b, inv, qmax float32, lanes *[8]float32) (q, qq float32) {
	qm := int64(qmax)
	var l [8]float32
	for i := 0; i+8 <= len(x); i += 8 {
		v := (*[8]float32)(x[i:])
		for k := range 8 {
			c := float32(max(0, min(qm, int64(float32((v[k]-b)*inv)+0.5))))
			q += c
			qq += c * c
			l[k] += v[k] * c
		}
	}
	*lanes = l
	return q, qq
}
