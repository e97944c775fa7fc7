package s3store

import (
	"context"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// serverKey is this server's registration: servers/<base64url(location)>.<id>.
func (s *Store) serverKey() string {
	return s.p + "servers/" + base64.RawURLEncoding.EncodeToString([]byte(s.cfg.Advertise)) + "." + s.serverID
}

// register writes (or refreshes) the server's registration.
func (s *Store) register(ctx context.Context) error {
	_, err := s.putJSON(ctx, s.serverKey(), map[string]any{"location": s.cfg.Advertise, "server": s.serverID, "at": time.Now().UTC()}, "")
	return wrap(err, "store: register server %s", s.serverKey())
}

// Locations implements store.Locator: the advertised locations of the
// servers whose registration is fresher than LeaseTTL, sorted, this
// server's included. The listing is cached for a second.
func (s *Store) Locations(ctx context.Context) ([]string, error) {
	s.locMu.Lock()
	defer s.locMu.Unlock()
	if time.Since(s.locsAt) < min(time.Second, s.cfg.Heartbeat) {
		return append([]string(nil), s.locs...), nil
	}
	objs, err := s.list(ctx, s.p+"servers/")
	if err != nil {
		return nil, wrap(err, "store: list servers")
	}
	live := s.s3Now().Add(-s.cfg.LeaseTTL())
	seen := map[string]bool{}
	if s.cfg.Advertise != "" {
		seen[s.cfg.Advertise] = true
	}
	for _, o := range objs {
		if !o.mod.After(live) {
			continue
		}
		enc, _, _ := strings.Cut(strings.TrimPrefix(o.key, s.p+"servers/"), ".")
		loc, err := base64.RawURLEncoding.DecodeString(enc)
		if err == nil && len(loc) > 0 {
			seen[string(loc)] = true
		}
	}
	s.locs = s.locs[:0]
	for l := range seen {
		s.locs = append(s.locs, l)
	}
	sort.Strings(s.locs)
	s.locsAt = time.Now()
	return append([]string(nil), s.locs...), nil
}

// GCReport says what a GC pass collected.
type GCReport struct {
	Versions  int   // data/<id>/ sets deleted: retired versions, crashed or failed uploads
	Objects   int   // objects deleted under data/
	Bytes     int64 // their bytes
	Uploads   int   // stale heartbeats removed
	Locks     int   // stale reservations removed
	Markers   int   // retired markers removed
	Servers   int   // stale server registrations removed
	Multipart int   // incomplete multipart uploads aborted
	Kept      int   // unreferenced versions kept: younger than the age threshold, or live
}

// GC collects what no reader or writer can still use, on the S3 server's
// clock:
//   - data/<id>/ that no catalog entry references, when its upload's
//     heartbeat, its retired marker and its newest object are all older
//     than olderThan (a replaced or deleted version: readers that opened
//     it had olderThan to finish; a crashed or failed upload);
//   - heartbeats, reservations, retired markers and server registrations
//     older than olderThan (a live upload or server refreshes its own every
//     Heartbeat), and incomplete multipart uploads started before then.
//
// olderThan must be at least MinGCAge (LeaseTTL): a live upload is never
// silent that long, so GC never deletes what it is writing.
func (s *Store) GC(ctx context.Context, olderThan time.Duration) (GCReport, error) {
	if olderThan < s.cfg.MinGCAge() {
		return GCReport{}, fmt.Errorf("store: gc: --older-than %s is under the %s lease of live uploads (6 heartbeats of %s)", olderThan, s.cfg.MinGCAge(), s.cfg.Heartbeat)
	}
	return s.gc(ctx, olderThan)
}

// gc is GC without the lease check (tests collect at once).
func (s *Store) gc(ctx context.Context, olderThan time.Duration) (GCReport, error) {
	var r GCReport
	if err := s.checkOpen(); err != nil {
		return r, err
	}
	// Heartbeats and retired markers first, the catalog after them: an
	// upload that commits meanwhile is then seen in the catalog, or its
	// heartbeat was listed.
	uploads, err := s.list(ctx, s.p+"uploads/")
	if err != nil {
		return r, wrap(err, "store: gc: list uploads")
	}
	retired, err := s.list(ctx, s.p+"retired/")
	if err != nil {
		return r, wrap(err, "store: gc: list retired")
	}
	cutoff := s.s3Now().Add(-olderThan)
	young := map[string]bool{} // ids with a fresh heartbeat or retired marker
	for _, o := range append(uploads, retired...) {
		if o.mod.After(cutoff) {
			young[o.key[strings.LastIndexByte(o.key, '/')+1:]] = true
		}
	}
	recs, bad, err := s.catalog(ctx, "")
	if err != nil {
		return r, err
	}
	if len(bad) > 0 { // their data cannot be told from garbage
		return r, fmt.Errorf("store: gc: %d catalog entries cannot be read (%s): fix or delete them first; nothing was collected", len(bad), strings.Join(bad, ", "))
	}
	referenced := map[string]bool{}
	for _, rec := range recs {
		referenced[rec.Data] = true
	}
	data, err := s.list(ctx, s.p+"data/")
	if err != nil {
		return r, wrap(err, "store: gc: list data")
	}
	type set struct {
		keys   []string
		bytes  int64
		newest time.Time
	}
	sets := map[string]*set{}
	for _, o := range data {
		id, _, _ := strings.Cut(strings.TrimPrefix(o.key, s.p+"data/"), "/")
		st := sets[id]
		if st == nil {
			st = &set{}
			sets[id] = st
		}
		st.keys = append(st.keys, o.key)
		st.bytes += o.size
		if o.mod.After(st.newest) {
			st.newest = o.mod
		}
	}
	for id, st := range sets {
		if referenced[id] {
			continue
		}
		if young[id] || st.newest.After(cutoff) {
			r.Kept++
			continue
		}
		if err := s.deleteKeys(ctx, st.keys); err != nil {
			return r, fmt.Errorf("store: gc: version %s: %w", id, err)
		}
		s.log.Info().Str("version", id).Int("objects", len(st.keys)).Int64("bytes", st.bytes).Msg("gc: collected an unreferenced version")
		r.Versions++
		r.Objects += len(st.keys)
		r.Bytes += st.bytes
	}
	// Markers: stale heartbeats; retired markers once their data is gone
	// (or, stale, of a version that is current again: a failed intent).
	var stale []string
	for _, o := range uploads {
		if !o.mod.After(cutoff) {
			stale = append(stale, o.key)
			r.Uploads++
		}
	}
	for _, o := range retired {
		if !o.mod.After(cutoff) {
			stale = append(stale, o.key)
			r.Markers++
		}
	}
	servers, err := s.list(ctx, s.p+"servers/")
	if err != nil {
		return r, wrap(err, "store: gc: list servers")
	}
	probes, err := s.list(ctx, s.p+"probe/") // a server killed while it started
	if err != nil {
		return r, wrap(err, "store: gc: list probes")
	}
	for _, o := range probes {
		if !o.mod.After(cutoff) {
			stale = append(stale, o.key)
		}
	}
	for _, o := range servers {
		if !o.mod.After(cutoff) {
			stale = append(stale, o.key)
			r.Servers++
		}
	}
	if err := s.deleteKeys(ctx, stale); err != nil {
		return r, fmt.Errorf("store: gc: markers: %w", err)
	}
	locks, err := s.list(ctx, s.p+"locks/")
	if err != nil {
		return r, wrap(err, "store: gc: list locks")
	}
	for _, o := range locks {
		if o.mod.After(cutoff) {
			continue
		}
		_, err := s.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(o.key), IfMatch: aws.String(o.etag)})
		if err == nil {
			r.Locks++
		} else if !isNotFound(err) && !isPrecondition(err) {
			return r, wrap(err, "store: gc: delete lock %s", o.key)
		}
	}
	n, err := s.abortMultipart(ctx, cutoff, young)
	r.Multipart = n
	return r, err
}

// abortMultipart aborts incomplete multipart uploads under data/ started
// before cutoff whose upload has no fresh heartbeat.
func (s *Store) abortMultipart(ctx context.Context, cutoff time.Time, young map[string]bool) (int, error) {
	n := 0
	in := &s3.ListMultipartUploadsInput{Bucket: &s.cfg.Bucket, Prefix: aws.String(s.p + "data/")}
	for {
		out, err := s.c.ListMultipartUploads(ctx, in)
		if err != nil {
			return n, wrap(err, "store: gc: list multipart uploads")
		}
		for _, u := range out.Uploads {
			key := aws.ToString(u.Key)
			id, _, _ := strings.Cut(strings.TrimPrefix(key, s.p+"data/"), "/")
			if young[id] || aws.ToTime(u.Initiated).After(cutoff) {
				continue
			}
			_, err := s.c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.cfg.Bucket, Key: u.Key, UploadId: u.UploadId})
			if err != nil && !isNotFound(err) {
				return n, wrap(err, "store: gc: abort multipart upload of %s", key)
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}
