package flightsrv

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/store/s3store"
)

// StoreConfig selects the model store of `serve`: the local directory
// ServerConfig.DataDir (the default), or an S3 bucket shared with other
// servers (URL s3://BUCKET[/PREFIX]; docs/STORE.md).
type StoreConfig struct {
	URL string // s3://BUCKET[/PREFIX]; empty: the local store in DataDir
	// S3 is the S3 store's configuration (endpoint, region, path style,
	// advertised location, heartbeat, ...); Bucket and Prefix come from URL.
	S3 s3store.Config
}

// Describe names the store for messages: the URL, or the local directory.
func (c ServerConfig) Describe() string {
	if c.Store.URL != "" {
		return c.Store.URL
	}
	return c.DataDir
}

// openStore opens the configured store. Configuration mistakes are
// *ConfigError.
func openStore(ctx context.Context, c ServerConfig) (store.Store, error) {
	if c.Store.URL == "" {
		if err := checkDataDir(c.DataDir); err != nil {
			return nil, err
		}
		return store.OpenLocal(c.DataDir, c.Logger)
	}
	bucket, prefix, err := s3store.ParseURL(c.Store.URL)
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("--store: %w", err)}
	}
	cfg := c.Store.S3
	cfg.Bucket, cfg.Prefix, cfg.Logger = bucket, prefix, c.Logger
	if err := cfg.Validate(); err != nil {
		return nil, &ConfigError{err}
	}
	return s3store.Open(ctx, cfg)
}

// readErr is the status of a failed read of a stored file: Unavailable
// when the store cannot be reached (the read may work later), NotFound
// when the version read was collected meanwhile, else internal.
func readErr(internal, err error) error {
	switch {
	case errors.Is(err, store.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	}
	return internal
}
