//go:build amd64

package pipes

func clockLoop(n int) int // n iterations of 8 dependent integer adds; returns 8n

// loopX(n): n iterations of 12 independent X instructions (pipes_amd64.s).

func loopAdd(n int)
func loopMul(n int)
func loopFMA(n int)
func loopMax(n int)
func loopRound(n int)
func loopCvtt(n int)
func loopPMaxSD(n int)
func loopAddMul(n int)
func loopMaxMul(n int)
func loopAddMax(n int)

// loops are the throughput loops, by name.
var loops = []struct {
	name string
	run  func(n int)
}{
	{"Add", loopAdd},
	{"Mul", loopMul},
	{"FMA", loopFMA},
	{"Max", loopMax},
	{"Round", loopRound},
	{"Cvtt", loopCvtt},
	{"PMaxSD", loopPMaxSD},
	{"AddMul", loopAddMul},
	{"MaxMul", loopMaxMul},
	{"AddMax", loopAddMax},
}
