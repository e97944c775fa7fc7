// Command arrowquant quantizes diffusion models to INT2/INT4/INT8 locally
// and serves the same pipeline over Arrow Flight.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/gguf"
	"github.com/arrowquant/arrowquant/local"
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
	var ue usageError
	var ie *gguf.InputError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue), errors.As(err, &ie), config.Kind(err) != "", errors.Is(err, config.ErrValidation), errors.Is(err, local.ErrOutputNotEmpty):
		return exitUsage
	}
	return exitFailure
}

var logLevel string

func newLogger() zerolog.Logger {
	lvl, err := zerolog.ParseLevel(logLevel)
	if err != nil {
		lvl = zerolog.WarnLevel
	}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(lvl).With().Timestamp().Logger()
	}
	return zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Logger()
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "arrowquant",
		Short:         "Quantize diffusion models to INT2/INT4/INT8 with per-group scales and accuracy-checked fallback",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newQuantizeCmd(), newDequantizeCmd(), newExportCmd(), newGenModelCmd(), newValidateConfigCmd(), newProfilesCmd(),
		newServeCmd(), newPushCmd(), newPullCmd(), newLsCmd(), newInfoCmd(), newUsersCmd())
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "arrowquant:", err)
	}
	os.Exit(exitCode(err))
}

// exactArgs is cobra.ExactArgs with a usage exit code.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
