package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress draws a bar on stderr when it is a terminal; otherwise nothing.
type progress struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func newProgress(total int64, desc string, bytes bool) *progress {
	if !term.IsTerminal(int(os.Stderr.Fd())) || os.Getenv("ARROW_QUANT_NO_PROGRESS") != "" {
		return &progress{}
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionFullWidth(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
	}
	if bytes {
		opts = append(opts, progressbar.OptionShowBytes(true))
	}
	return &progress{bar: progressbar.NewOptions64(total, opts...)}
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
	p.bar.Set64(v)
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
}

var _ io.Writer = os.Stderr
