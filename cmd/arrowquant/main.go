// Command arrowquant quantizes diffusion models to INT2/INT4/INT8 locally
// and serves the same pipeline over Arrow Flight.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	"google.golang.org/grpc/experimental"

	"github.com/arrowquant/arrowquant/calib"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/flightsrv"
	"github.com/arrowquant/arrowquant/gguf"
	"github.com/arrowquant/arrowquant/internal/bufpool"
	"github.com/arrowquant/arrowquant/internal/outdir"
	"github.com/arrowquant/arrowquant/schema"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks errors that exit with exitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func exitCode(err error) int {
	var (
		ue       usageError
		conflict *outdir.ConflictError
		notOurs  *outdir.NotOursError
		badServe *flightsrv.ConfigError
		badInput *gguf.InputError
		badCalib *calib.FormatError
		mismatch *calib.MismatchError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue), config.Kind(err) != "", errors.Is(err, config.ErrValidation), errors.Is(err, outdir.ErrNotEmpty), errors.Is(err, outdir.ErrFileExists),
		errors.As(err, &conflict), errors.As(err, &notOurs), errors.As(err, &badServe), errors.As(err, &badInput),
		errors.As(err, &badCalib), errors.As(err, &mismatch):
		return exitUsage
	}
	return exitFailure
}

// addOverwriteFlags adds --overwrite and --force to a command that writes
// an output directory (internal/outdir says what they may replace).
func addOverwriteFlags(fs *pflag.FlagSet, overwrite, force *bool) {
	fs.BoolVar(overwrite, "overwrite", false, "replace a non-empty output directory that ArrowQuant created")
	fs.BoolVar(force, "force", false, "with --overwrite: replace the output directory even if ArrowQuant did not create it")
}

var logLevel, logFormat string

func newLogger() zerolog.Logger {
	lvl, err := zerolog.ParseLevel(logLevel)
	if err != nil {
		lvl = zerolog.WarnLevel
	}
	console := term.IsTerminal(int(os.Stderr.Fd()))
	switch logFormat {
	case "json":
		console = false
	case "console":
		console = true
	}
	if console {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(lvl).With().Timestamp().Logger()
	}
	return zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Logger()
}

// version and commit are set at link time (make build: -X main.commit=...;
// releases also -X main.version=v1.2.3); without them the Go build's VCS
// stamp gives the commit when it has one.
var version, commit = "dev", ""

// versionString names the release, the artifact format it writes, and the
// commit it was built from (from the Go build's VCS stamp).
func versionString() string {
	rev, dirty := commit, ""
	if bi, ok := debug.ReadBuildInfo(); ok && rev == "" {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
				if len(rev) > 12 {
					rev = rev[:12]
				}
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
	}
	if rev == "" {
		rev = "unknown"
	}
	return fmt.Sprintf("%s (artifact format %s, commit %s%s, %s)", version, schema.FormatVersion, rev, dirty, runtime.Version())
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "arrowquant",
		Short:         "Quantize diffusion models to INT2/INT4/INT8 with per-group scales and accuracy-checked fallback",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.Version = versionString()
	root.SetVersionTemplate("arrowquant {{.Version}}\n")
	root.PersistentFlags().StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&logFormat, "log-format", "auto", "log format: json, console, or auto (console when stderr is a terminal)")
	root.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the command to this file (go tool pprof)")
	root.PersistentFlags().StringVar(&memProfile, "memprofile", "", "write an allocation profile of the command to this file when it ends (go tool pprof -sample_index=alloc_space)")
	root.PersistentPostRunE = func(*cobra.Command, []string) error { return stopProfile() }
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if err := startProfile(); err != nil {
			return err
		}
		if logFormat != "auto" && logFormat != "json" && logFormat != "console" {
			return usagef("--log-format %q: want json, console or auto", logFormat)
		}
		if _, err := zerolog.ParseLevel(logLevel); err != nil || logLevel == "" {
			return usagef("--log-level %q: want debug, info, warn or error", logLevel)
		}
		return nil
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newQuantizeCmd(), newDequantizeCmd(), newExportCmd(), newInspectCmd(), newGenModelCmd(), newValidateConfigCmd(), newProfilesCmd(),
		newServeCmd(), newPushCmd(), newPullCmd(), newLsCmd(), newInfoCmd(), newUsersCmd(), newStoreCmd())
	return root
}

var cpuProfile, memProfile string
var profileFile *os.File

// startProfile starts the --cpuprofile profile, if asked.
func startProfile() error {
	if cpuProfile == "" {
		return nil
	}
	f, err := os.Create(cpuProfile)
	if err != nil {
		return usagef("--cpuprofile: %v", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("--cpuprofile: %w", err)
	}
	profileFile = f
	return nil
}

// stopProfile writes the profiles out (also when the command failed).
func stopProfile() error {
	if memProfile != "" {
		f, err := os.Create(memProfile)
		if err != nil {
			return fmt.Errorf("--memprofile: %w", err)
		}
		werr := pprof.Lookup("allocs").WriteTo(f, 0)
		if err := f.Close(); werr == nil {
			werr = err
		}
		if werr != nil {
			return fmt.Errorf("--memprofile: %w", werr)
		}
	}
	if profileFile == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := profileFile.Close()
	profileFile = nil
	return err
}

// streamGCPercent is the collector's target for pull, which only passes
// received messages through: their bodies are its garbage, and at main's
// 25 the collector took a third of its CPU (docs/PERF.md).
const streamGCPercent = 200

// serveGCPercent is the collector's target for serve: a push's live heap
// is about 110 MB, and what it allocates per received batch made 2,552
// collections at 25 before the bodies were pooled. With pooled bodies a
// push took 59.6 s and 443 MB at 25, 53.5-56.4 s and 529-534 MB at 50
// (docs/PERF.md).
const serveGCPercent = 50

// relaxGC raises the GC target to percent unless GOGC is set.
func relaxGC(percent int) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(percent)
	}
}

func init() {
	// gRPC's proto codec takes its marshal and unmarshal buffers from the
	// process's default pool, which clears each one (1.8 s of a 15 GB
	// push's client CPU); the server and client options set the rest.
	experimental.SetDefaultBufferPool(bufpool.Transport)
}

func main() {
	// Chunks, codes and scales of the same few sizes are allocated and
	// freed millions of times on a large model: reuse them (docs/PERF.md).
	memory.DefaultAllocator = bufpool.New()
	// With the buffers reused, a collection is rare and cheap: a lower
	// target keeps the peak RSS down for the same CPU (docs/PERF.md).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	// SIGHUP (the terminal closed) stops a run like Ctrl-C: its temporary
	// output is removed on the way out.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if perr := stopProfile(); err == nil {
		err = perr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "arrowquant:", userMessage(err))
	}
	os.Exit(exitCode(err))
}

// exactArgs is cobra.ExactArgs with a usage exit code and the usage line.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		if n == 0 {
			return usagef("%s takes no positional arguments (got %q): every input is a flag\nusage: %s", cmd.Name(), args, cmd.UseLine())
		}
		return usagef("%s takes %d argument(s), got %d: %q\nusage: %s", cmd.Name(), n, len(args), args, cmd.UseLine())
	}
}

// addAlias adds a hidden flag spelling that sets the same variable as the
// documented one (old spellings keep working; --help shows one name).
func addAlias(fs *pflag.FlagSet, v *string, alias, name string) {
	fs.StringVar(v, alias, "", "alias of --"+name)
	_ = fs.MarkHidden(alias)
}
