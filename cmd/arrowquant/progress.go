package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress draws one bar on stderr when it is a terminal (nothing
// otherwise, or with ARROW_QUANT_NO_PROGRESS set). The bar has a fixed
// width so its line never wraps, and it is cleared when the run ends, so
// the summary on stdout starts on a clean line.
type progress struct {
	mu    sync.Mutex
	bar   *progressbar.ProgressBar
	bytes bool
}

func newProgress(total int64, desc string, bytes bool) *progress {
	p := &progress{bytes: bytes}
	if term.IsTerminal(int(os.Stderr.Fd())) && os.Getenv("ARROW_QUANT_NO_PROGRESS") == "" {
		p.bar = newBar(total, desc, bytes)
	}
	return p
}

func newBar(total int64, desc string, bytes bool) *progressbar.ProgressBar {
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionClearOnFinish(),
	}
	if bytes {
		opts = append(opts, progressbar.OptionShowBytes(true))
	}
	return progressbar.NewOptions64(total, opts...)
}

// update moves the bar to v of total (total may change as it is learnt).
func (p *progress) update(v, total int64, desc string) {
	if p.bar == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar.GetMax64() != total {
		p.bar.ChangeMax64(total)
	}
	if desc != "" {
		p.bar.Describe(desc)
	}
	p.bar.Set64(min(v, total))
}

// stage replaces the bar by a new one counting something else (push: bytes
// sent, then tensors quantized by the server).
func (p *progress) stage(total int64, desc string, bytes bool) {
	if p.bar == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar.Clear()
	p.bar.Exit()
	p.bar = newBar(total, desc, bytes)
}

// finish ends the bar: cleared when the run succeeded; left where it
// stopped (never jumped to 100%) with a note when it failed or was
// interrupted.
func (p *progress) finish(err error) {
	if p.bar == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.bar.Finish()
		p.bar.Clear()
		return
	}
	p.bar.Exit()
	fmt.Fprintln(os.Stderr, " (stopped)")
}
