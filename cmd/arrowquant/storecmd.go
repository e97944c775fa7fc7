package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arrowquant/arrowquant/flightsrv"
	"github.com/arrowquant/arrowquant/store/s3store"
)

// addStoreFlags adds the flags that choose and reach an S3 store (serve,
// store gc). Credentials and the region come the AWS way: AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE, web identity, ...
func addStoreFlags(f *pflag.FlagSet, c *flightsrv.StoreConfig) {
	f.StringVar(&c.URL, "store", "", "model store s3://BUCKET[/PREFIX], shared by any number of servers (default: the local directory --data)")
	f.StringVar(&c.S3.Endpoint, "s3-endpoint", "", "S3 endpoint of a non-AWS server, e.g. http://127.0.0.1:8333 (default: AWS_ENDPOINT_URL, else AWS)")
	f.StringVar(&c.S3.Region, "s3-region", "", "S3 region (default: AWS_REGION, else us-east-1)")
	f.BoolVar(&c.S3.PathStyle, "s3-path-style", false, "path-style S3 URLs (http://HOST/BUCKET/KEY), as most non-AWS servers want")
	f.DurationVar(&c.S3.Heartbeat, "s3-heartbeat", s3store.DefaultHeartbeat, "how often uploads and servers refresh their heartbeat objects; one silent for 6 heartbeats is dead (use one value for every server of a bucket)")
}

// s3Config is the S3 store's configuration from the flags.
func s3Config(c flightsrv.StoreConfig) (s3store.Config, error) {
	if !s3store.IsURL(c.URL) {
		return s3store.Config{}, usagef("--store %q: want s3://BUCKET[/PREFIX]", c.URL)
	}
	cfg := c.S3
	var err error
	if cfg.Bucket, cfg.Prefix, err = s3store.ParseURL(c.URL); err != nil {
		return cfg, usagef("--store: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

func newStoreCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "store", Short: "Maintain a model store shared by several servers (S3)"}
	var (
		sc        flightsrv.StoreConfig
		olderThan time.Duration
		asJSON    bool
	)
	gc := &cobra.Command{
		Use:   "gc --store s3://BUCKET[/PREFIX] [--older-than 1h]",
		Short: "Collect what no reader or upload can still use: replaced and deleted versions, crashed uploads",
		Long: `Collect the garbage of an S3 store: versions replaced or deleted longer than --older-than ago
(readers that opened them had that long to finish), the objects of uploads that crashed or failed,
stale heartbeats and reservations, and incomplete multipart uploads. A live upload refreshes its
heartbeat every --s3-heartbeat, so it is never collected: --older-than must be at least 6 heartbeats.
Safe to run while servers serve. Servers also run one pass when they start (serve --startup-gc).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sc.URL == "" {
				return usagef("--store s3://BUCKET[/PREFIX] is required (the local store collects its own garbage when the server starts)")
			}
			cfg, err := s3Config(sc)
			if err != nil {
				return err
			}
			if olderThan < cfg.MinGCAge() {
				return usagef("--older-than %s: must be at least %s (6 heartbeats of %s), or a live upload could be collected", olderThan, cfg.MinGCAge(), cfg.Heartbeat)
			}
			cfg.Logger = newLogger()
			cfg.StartupGC = 0
			s, err := s3store.Open(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			r, err := s.GC(cmd.Context(), olderThan)
			if err != nil {
				return err
			}
			if asJSON {
				b, _ := json.MarshalIndent(r, "", "  ")
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "collected %d versions (%d objects, %d bytes), %d stale uploads, %d reservations, %d retired markers, %d server registrations, %d incomplete multipart uploads; kept %d unreferenced versions younger than %s\n",
				r.Versions, r.Objects, r.Bytes, r.Uploads, r.Locks, r.Markers, r.Servers, r.Multipart, r.Kept, olderThan)
			return nil
		},
	}
	addStoreFlags(gc.Flags(), &sc)
	gc.Flags().DurationVar(&olderThan, "older-than", s3store.DefaultGCGrace, "collect only what has been unused this long (the grace readers of a replaced version get)")
	gc.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.AddCommand(gc)
	return cmd
}

// addServeStoreFlags adds the store flags of serve: the shared ones, the
// advertised location, the scratch directory and the startup GC.
func addServeStoreFlags(f *pflag.FlagSet, c *flightsrv.StoreConfig) {
	addStoreFlags(f, c)
	f.StringVar(&c.S3.Advertise, "advertise", "", "with --store s3://...: this server's location grpc://HOST:PORT as clients reach it, listed in every server's FlightInfo")
	f.StringVar(&c.S3.ScratchDir, "scratch-dir", "", "with --store s3://...: local directory for uploads being received (default: the system's temporary directory)")
	f.BoolVar(&c.S3.RangeReads, "s3-range-reads", false, "with --store s3://...: stream a model with parallel ranged GETs instead of one streaming GET (try on AWS S3, where one connection is the bound)")
	f.DurationVar(&c.S3.StartupGC, "startup-gc", s3store.DefaultGCGrace, "with --store s3://...: at start, collect in the background what has been unused this long (0 = never)")
}
