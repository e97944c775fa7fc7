package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/arrowquant/arrowquant/client"
	"github.com/arrowquant/arrowquant/config"
	"github.com/arrowquant/arrowquant/flightsrv"
	"github.com/arrowquant/arrowquant/flightsrv/middleware"
	"github.com/arrowquant/arrowquant/gguf"
	"github.com/arrowquant/arrowquant/quant"
)

func newServeCmd() *cobra.Command {
	var (
		c            flightsrv.ServerConfig
		configFile   string
		maxMessageMB int
		maxUploadGB  float64
		spoolMemMB   int64
		shutdown     time.Duration
		stdinEOF     bool
	)
	cmd := &cobra.Command{
		Use:   "serve [--addr 127.0.0.1:8815] [--data ./data] [flags]",
		Short: "Run the Arrow Flight server (DoPut FP weights, DoGet quantized batches) on a local or S3 store",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkConfigFile(configFile); err != nil {
				return err
			}
			defaults, err := config.Resolve(config.Options{YAMLPath: configFile, Lookup: os.LookupEnv})
			if err != nil {
				return err
			}
			if maxMessageMB <= 0 {
				return usagef("--max-message-mb must be positive")
			}
			relaxGC(serveGCPercent)
			if cmd.Flags().Changed("auth-token") && strings.TrimSpace(c.AuthToken) == "" {
				return usagef("--auth-token is empty: give a token (a server without --auth-token runs without authentication, which must be a choice, not an accident)")
			}
			if cmd.Flags().Changed("auth-basic") && strings.TrimSpace(c.AuthBasicFile) == "" {
				return usagef("--auth-basic needs a users file (create one with `arrowquant users add FILE USER`)")
			}
			if c.IdleTimeout < 0 {
				return usagef("--idle-timeout must not be negative (0 = never)")
			}
			if c.IdleTimeout == 0 {
				c.IdleTimeout = -1 // the flag's 0 means never; the service's 0 means its default
			}
			c.Defaults = defaults
			c.MaxMessageBytes = maxMessageMB << 20
			c.MaxUploadBytes = int64(maxUploadGB * (1 << 30))
			if spoolMemMB < 0 {
				return usagef("--spool-memory-mb must not be negative (0 = spool to files only)")
			}
			c.SpoolMemoryBytes = spoolMemMB << 20
			c.ShutdownTimeout = shutdown
			c.Logger = newLogger()
			c.Ready = func(a net.Addr) {
				fmt.Fprintf(cmd.OutOrStdout(), "arrowquant: serving Arrow Flight on grpc://%s (store %s)\n", a, c.Describe())
			}
			ctx := cmd.Context()
			if stdinEOF { // the parent holds our stdin open; when it dies, shut down
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer cancel()
				go func() {
					io.Copy(io.Discard, os.Stdin)
					cancel()
				}()
			}
			return flightsrv.Serve(ctx, c)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Addr, "addr", "127.0.0.1:8815", "listen address")
	f.StringVar(&c.DataDir, "data", "./data", "directory of the embedded local store")
	addServeStoreFlags(f, &c.Store) // --store s3://..., --s3-*, --advertise (storecmd.go)
	f.StringVar(&configFile, "config", "", "YAML with the server's default configuration (requests override it)")
	f.BoolVar(&c.KeepSource, "keep-source", false, "keep every upload's FP source so the quantize action can re-quantize it")
	f.StringVar(&c.AuthBasicFile, "auth-basic", "", "enable basic auth with this users `FILE` (user:bcrypt-hash lines, written by 'arrowquant users add')")
	f.StringVar(&c.AuthToken, "auth-token", "", "static bearer token every call must carry")
	f.StringVar(&c.TLSCertFile, "tls-cert", "", "TLS certificate (PEM)")
	f.StringVar(&c.TLSKeyFile, "tls-key", "", "TLS private key (PEM)")
	f.IntVar(&maxMessageMB, "max-message-mb", 256, "largest gRPC message accepted or sent, in MiB")
	f.Float64Var(&maxUploadGB, "max-upload-gb", 0, "largest DoPut upload in GiB of values (0 = unlimited)")
	f.Int64Var(&spoolMemMB, "spool-memory-mb", 0, "memory in MiB all uploads together may hold received values in before they are quantized, instead of spool files (a Dream-7B upload holds about two layers, ~0.9 GB, at once); past it an upload waits for quantization, or spills to files (0 = files only)")
	f.StringVar(&c.MetricsAddr, "metrics-addr", "", "serve Prometheus /metrics and /healthz here (e.g. 127.0.0.1:9464)")
	f.DurationVar(&shutdown, "shutdown-timeout", 30*time.Second, "how long running calls may finish after SIGINT/SIGTERM")
	f.IntVar(&c.MaxUploads, "max-uploads", flightsrv.DefaultMaxUploads, "concurrent uploads (DoPut, quantize action) in all; over it a call gets ResourceExhausted (-1 = unlimited)")
	f.IntVar(&c.MaxUploadsPerClient, "max-uploads-per-client", flightsrv.DefaultMaxUploadsPerClient, "concurrent uploads per client (authenticated user, else host) (-1 = unlimited)")
	f.DurationVar(&c.IdleTimeout, "idle-timeout", flightsrv.DefaultIdleTimeout, "end an upload whose client sends and reads nothing for this long, freeing its name (0 = never)")
	f.BoolVar(&stdinEOF, "exit-on-stdin-eof", false, "shut down when standard input closes (for a parent process that embeds the server)")
	return cmd
}

// clientFlags are the connection flags of push, pull, ls and info.
type clientFlags struct{ o client.Options }

func addClientFlags(f *pflag.FlagSet) *clientFlags {
	c := &clientFlags{}
	f.StringVar(&c.o.Server, "server", envOr("ARROW_QUANT_SERVER", "grpc://127.0.0.1:8815"), "server URL: grpc://HOST:PORT or grpc+tls://HOST:PORT (env ARROW_QUANT_SERVER)")
	f.StringVar(&c.o.Token, "token", os.Getenv("ARROW_QUANT_TOKEN"), "bearer token (env ARROW_QUANT_TOKEN)")
	f.StringVar(&c.o.User, "user", "", "user for basic auth (password from ARROW_QUANT_PASSWORD)")
	f.StringVar(&c.o.TLSCAFile, "tls-ca", "", "CA certificate for grpc+tls")
	return c
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (c *clientFlags) dial(ctx context.Context) (*client.Client, error) {
	o := c.o
	if o.User != "" {
		o.Password = os.Getenv("ARROW_QUANT_PASSWORD")
	}
	dialedServer = o.Server
	return client.Dial(ctx, o)
}

func newPushCmd() *cobra.Command {
	var model, name, calibration, method string
	var asJSON, overwrite bool
	cmd := &cobra.Command{
		Use:   "push --server URL --model DIR --name NAME [config flags] [--calibration FILE] [--method M] [--json]",
		Short: "Upload a model to the server, which quantizes it as it arrives and stores the result",
		Args:  exactArgs(0),
	}
	cf := addConfigFlags(cmd.Flags())
	cl := addClientFlags(cmd.Flags())
	cmd.Flags().StringVar(&model, "model", "", "model directory")
	cmd.Flags().StringVar(&name, "name", "", "name on the server (default: the directory name)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "replace a stored model of that name")
	cmd.Flags().StringVar(&calibration, "calibration", "", "calibration activations sent with the upload (.arrow, .parquet or .jsonl)")
	cmd.Flags().StringVar(&method, "method", quant.DefaultMethod, methodFlagHelp)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		out := cmd.OutOrStdout()
		if model == "" {
			return usagef("push needs --model")
		}
		if err := checkModelDir(model); err != nil {
			return err
		}
		if err := checkMethodFlag(method); err != nil {
			return err
		}
		overrides, err := cf.requestConfig(cmd.Flags(), method)
		if err != nil {
			return err
		}
		c, err := cl.dial(cmd.Context())
		if err != nil {
			return err
		}
		defer c.Close()
		bar := newProgress(0, "pushing", true)
		var quantizing atomic.Bool
		res, err := c.Push(cmd.Context(), model, client.PushOptions{
			Name: name, Config: overrides, Overwrite: overwrite, Calibration: calibration, Method: method,
			Progress: func(sent, total int64) {
				if !quantizing.Load() {
					bar.update(sent, total, "")
				}
			},
			Quantized: func(done, total int, last string) {
				if quantizing.CompareAndSwap(false, true) {
					bar.stage(int64(total), "server quantizing", false)
				}
				bar.update(int64(done), int64(total), "server quantizing "+shortName(last))
			},
		})
		bar.finish(err)
		if err != nil {
			return err
		}
		printResult(out, res, asJSON)
		return nil
	}
	return cmd
}

// requestConfig resolves the configuration exactly as quantize does
// (presets < YAML < ARROW_QUANT_* environment < flags) and sends it whole,
// so a push quantizes like a local run with the same flags.
func (c *configFlags) requestConfig(fs *pflag.FlagSet, method string) (map[string]any, error) {
	cfg, err := c.resolve(fs)
	if err != nil {
		return nil, err
	}
	if err := checkTargetMethod(cfg, method); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(cfg)
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

func newPullCmd() *cobra.Command {
	var name, output, format string
	var overwrite, force, exact, runnable bool
	cmd := &cobra.Command{
		Use:   "pull --server URL --name NAME --output DIR [--format gguf --output model.gguf [--exact] [--runnable]]",
		Short: "Download a stored model into DIR (the same layout as quantize), or as a GGUF file exported by the server",
		Args:  exactArgs(0),
	}
	cl := addClientFlags(cmd.Flags())
	cmd.Flags().StringVar(&name, "name", "", "model name")
	cmd.Flags().StringVar(&output, "output", "", "output directory (a .gguf file with --format gguf)")
	cmd.Flags().StringVar(&format, "format", "arrow", "arrow: the artifact directory; gguf: one GGUF file for llama.cpp (docs/GGUF.md)")
	cmd.Flags().BoolVar(&exact, "exact", false, "with --format gguf: refuse (FailedPrecondition) if a tensor would be re-encoded")
	cmd.Flags().BoolVar(&runnable, "runnable", false, "with --format gguf: require an architecture llama.cpp runs, with its tokenizer")
	addOverwriteFlags(cmd.Flags(), &overwrite, &force)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if name == "" || output == "" {
			return usagef("pull needs --name and --output")
		}
		if format != "arrow" && format != "gguf" {
			return usagef("--format %q: want arrow or gguf", format)
		}
		if format == "arrow" && (exact || runnable) {
			return usagef("--exact and --runnable apply to --format gguf")
		}
		relaxGC(streamGCPercent)
		c, err := cl.dial(cmd.Context())
		if err != nil {
			return err
		}
		defer c.Close()
		if format == "gguf" {
			bar := newProgress(0, "exporting "+name, true)
			raw, err := c.ExportGGUF(cmd.Context(), name, output, client.GGUFOptions{Exact: exact, Runnable: runnable, Overwrite: overwrite,
				Progress: func(done int64) { bar.update(done, done, "") }})
			bar.finish(err)
			if err != nil {
				return err
			}
			var rep gguf.Report
			if err := json.Unmarshal(raw, &rep); err != nil {
				return fmt.Errorf("the server's export report: %w", err)
			}
			rep.Output = output
			printExportSummary(cmd.OutOrStdout(), &rep)
			return nil
		}
		bar := newProgress(0, "pulling "+name, false)
		err = c.Pull(cmd.Context(), name, output, client.PullOptions{Overwrite: overwrite, Force: force, Progress: func(done, total int64) {
			bar.update(done, total, "")
		}})
		bar.finish(err)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "pulled %s into %s\n", name, output)
		return nil
	}
	return cmd
}

func newLsCmd() *cobra.Command {
	var prefix string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls --server URL [--prefix P]",
		Short: "List stored models",
		Args:  exactArgs(0),
	}
	cl := addClientFlags(cmd.Flags())
	cmd.Flags().StringVar(&prefix, "prefix", "", "only names starting with this")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cl.dial(cmd.Context())
		if err != nil {
			return err
		}
		defer c.Close()
		infos, err := c.List(cmd.Context(), prefix)
		if err != nil {
			return err
		}
		rows := []map[string]any{}
		for _, info := range infos {
			var md map[string]any
			json.Unmarshal(info.GetAppMetadata(), &md)
			rows = append(rows, map[string]any{
				"name": md["model"], "bytes": info.GetTotalBytes(), "batches": info.GetTotalRecords(),
				"bit_width": md["bit_width"], "cosine_similarity": md["cosine_similarity"], "modality": md["modality"],
			})
		}
		out := cmd.OutOrStdout()
		if asJSON {
			b, _ := json.MarshalIndent(rows, "", "  ")
			fmt.Fprintln(out, string(b))
			return nil
		}
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSIZE MB\tBITS\tCOSINE\tMODALITY")
		for _, r := range rows {
			fmt.Fprintf(tw, "%v\t%.1f\t%v\t%.4f\t%v\n", r["name"], float64(r["bytes"].(int64))/(1<<20), r["bit_width"], num(r["cosine_similarity"]), r["modality"])
		}
		return tw.Flush()
	}
	return cmd
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

func newInfoCmd() *cobra.Command {
	var name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info --server URL --name NAME [--json]",
		Short: "Show a stored model tensor by tensor (as inspect does locally); --json for the whole report",
		Args:  exactArgs(0),
	}
	cl := addClientFlags(cmd.Flags())
	cmd.Flags().StringVar(&name, "name", "", "model name")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the whole report (GetFlightInfo app_metadata) as JSON")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if name == "" {
			return usagef("info needs --name")
		}
		c, err := cl.dial(cmd.Context())
		if err != nil {
			return err
		}
		defer c.Close()
		info, md, err := c.Info(cmd.Context(), name)
		if err != nil {
			return err
		}
		if !asJSON {
			raw, _ := json.Marshal(md)
			var res quant.Result
			if err := json.Unmarshal(raw, &res); err != nil {
				return fmt.Errorf("the server's report of %s: %w", name, err)
			}
			printTable(cmd.OutOrStdout(), &res, info.GetTotalBytes())
			return nil
		}
		md["total_records"], md["total_bytes"] = info.GetTotalRecords(), info.GetTotalBytes()
		b, _ := json.MarshalIndent(md, "", "  ")
		fmt.Fprintln(cmd.OutOrStdout(), string(b))
		return nil
	}
	return cmd
}

func newUsersCmd() *cobra.Command {
	users := &cobra.Command{Use: "users", Short: "Manage the basic-auth users file of `serve --auth-basic`"}
	add := &cobra.Command{
		Use:   "add FILE USER",
		Short: "Add or replace USER in FILE with a bcrypt hash (password from ARROW_QUANT_PASSWORD or the terminal)",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw := os.Getenv("ARROW_QUANT_PASSWORD")
			if pw == "" && term.IsTerminal(int(os.Stdin.Fd())) {
				fmt.Fprint(os.Stderr, "password: ")
				b, err := term.ReadPassword(int(os.Stdin.Fd()))
				fmt.Fprintln(os.Stderr)
				if err != nil {
					return err
				}
				pw = string(b)
			} else if pw == "" {
				b, err := io.ReadAll(io.LimitReader(os.Stdin, 4096))
				if err != nil {
					return err
				}
				pw = strings.TrimRight(string(b), "\r\n")
			}
			if pw == "" {
				return usagef("empty password")
			}
			if err := middleware.AddUser(args[0], args[1], pw); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "user %s written to %s\n", args[1], args[0])
			return nil
		},
	}
	users.AddCommand(add)
	return users
}

// shortName keeps a tensor name short enough for a progress line.
func shortName(s string) string {
	if len(s) > 40 {
		return "…" + s[len(s)-39:]
	}
	return s
}
