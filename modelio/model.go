package modelio

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/arrowquant/arrowquant/internal/fp"
	"github.com/arrowquant/arrowquant/internal/fsutil"
	"github.com/arrowquant/arrowquant/internal/outdir"
)

// Well-known file names of Hugging Face model directories.
const (
	IndexFile          = "model.safetensors.index.json"
	SingleFile         = "model.safetensors"
	DiffusersFile      = "diffusion_pytorch_model.safetensors"
	DiffusersIndexFile = "diffusion_pytorch_model.safetensors.index.json"
	ConfigFile         = "config.json"
)

// MaxJSONBytes bounds the JSON files of a model directory (config.json,
// the index): Dream 7B's index is 30 KB.
const MaxJSONBytes = 64 << 20

// errReason is the message of a file error without the path, which the
// FormatError carrying it names already.
func errReason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// Model is an opened model directory. Tensor data stays on disk; reads go
// through ReadRaw / ReadFloat32, which are safe for concurrent use.
type Model struct {
	Dir      string            // absolute directory
	Tensors  []TensorInfo      // supported tensors: shard order (sorted shard names), then data offset
	Config   map[string]any    // parsed config.json, nil if absent
	Metadata map[string]string // merged safetensors __metadata__ of all shards (+ index "metadata" string values)
	Skipped  []TensorInfo      // tensors of unsupported dtype left out (OpenOptions.SkipUnsupported)
	Shards   []string          // absolute shard paths

	files  map[string]*os.File // one per shard
	byName map[string]int      // name -> index in all
	all    []TensorInfo        // Tensors and Skipped
	mu     sync.Mutex
	closed bool
	remote bool // config received without a directory: no files to consult
}

// OpenOptions controls Open.
type OpenOptions struct {
	// SkipUnsupported leaves tensors of dtypes other than F32/F16/BF16/F64
	// out of Model.Tensors (listing them in Model.Skipped) instead of failing.
	SkipUnsupported bool
}

type indexJSON struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// Open validates every shard header of the model in dir and keeps the
// shard files open for reading. Recognised layouts, in order of precedence:
// model.safetensors.index.json with its shards; model.safetensors;
// diffusion_pytorch_model.safetensors.index.json; diffusion_pytorch_model.safetensors;
// otherwise exactly one *.safetensors file.
func Open(dir string, opt OpenOptions) (*Model, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("modelio: open model directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("modelio: open model directory: %s is not a directory", dir)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("modelio: %w", err)
	}
	m := &Model{Dir: abs, files: map[string]*os.File{}, byName: map[string]int{}, Metadata: map[string]string{}}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()

	shardNames, index, indexPath, err := locateShards(abs)
	if err != nil {
		return nil, err
	}
	where := map[string]string{} // tensor -> shard file name
	for _, name := range shardNames {
		path := filepath.Join(abs, name)
		if _, err := os.Stat(path); err != nil && index != nil {
			// Name the first tensor the index assigns to this shard.
			var tensors []string
			for t, s := range index.WeightMap {
				if s == name {
					tensors = append(tensors, t)
				}
			}
			sort.Strings(tensors)
			return nil, &FormatError{File: indexPath, Tensor: tensors[0],
				Reason: fmt.Sprintf("shard %q named in the index does not exist", name)}
		}
		f, h, err := openShard(path)
		if err != nil {
			return nil, err
		}
		m.files[path] = f
		m.Shards = append(m.Shards, path)
		for _, t := range h.tensors {
			if prev, dup := where[t.Name]; dup {
				return nil, &FormatError{File: path, Tensor: t.Name,
					Reason: fmt.Sprintf("duplicate tensor name (also in %s)", filepath.Join(abs, prev))}
			}
			where[t.Name] = name
			if index != nil {
				if want, listed := index.WeightMap[t.Name]; !listed {
					return nil, &FormatError{File: path, Tensor: t.Name, Reason: "tensor is not listed in " + indexPath}
				} else if want != name {
					return nil, &FormatError{File: path, Tensor: t.Name,
						Reason: fmt.Sprintf("tensor found here but %s maps it to %q", indexPath, want)}
				}
			}
			m.byName[t.Name] = len(m.all)
			m.all = append(m.all, t)
		}
		keys := make([]string, 0, len(h.meta))
		for k := range h.meta {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if _, exists := m.Metadata[k]; !exists { // first shard wins
				m.Metadata[k] = h.meta[k]
			}
		}
	}
	if index != nil {
		names := make([]string, 0, len(index.WeightMap))
		for t := range index.WeightMap {
			names = append(names, t)
		}
		sort.Strings(names)
		for _, t := range names {
			if _, found := where[t]; !found {
				return nil, &FormatError{File: indexPath, Tensor: t,
					Reason: fmt.Sprintf("tensor not found in shard %q", index.WeightMap[t])}
			}
		}
		for k, v := range index.Metadata {
			if s, isStr := v.(string); isStr {
				if _, exists := m.Metadata[k]; !exists {
					m.Metadata[k] = s
				}
			}
		}
	}
	for _, t := range m.all {
		if t.DType.Supported() {
			m.Tensors = append(m.Tensors, t)
			continue
		}
		if !opt.SkipUnsupported {
			return nil, &UnsupportedDTypeError{File: t.File, Tensor: t.Name, DType: t.DType}
		}
		m.Skipped = append(m.Skipped, t)
	}
	if len(m.all) == 0 {
		return nil, &FormatError{File: strings.Join(m.Shards, ", "), Reason: "holds no tensors (a header with only __metadata__): nothing to quantize"}
	}
	if m.Config, err = readJSONObject(filepath.Join(abs, ConfigFile)); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// locateShards picks the shard files (sorted names relative to dir) and the
// index, if any.
func locateShards(dir string) (shards []string, index *indexJSON, indexPath string, err error) {
	for _, pair := range [][2]string{{IndexFile, SingleFile}, {DiffusersIndexFile, DiffusersFile}} {
		ip := filepath.Join(dir, pair[0])
		if _, err := os.Stat(ip); err == nil {
			idx, names, err := readIndex(ip)
			if err != nil {
				return nil, nil, "", err
			}
			return names, idx, ip, nil
		}
		if st, err := os.Stat(filepath.Join(dir, pair[1])); err == nil {
			if st.IsDir() {
				return nil, nil, "", &FormatError{File: filepath.Join(dir, pair[1]), Reason: "is a directory, not a safetensors file"}
			}
			return []string{pair[1]}, nil, "", nil
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, "", fmt.Errorf("modelio: %w", err)
	}
	var found []string
	for _, e := range ents {
		if isSafetensors(e.Name()) && !e.IsDir() {
			found = append(found, e.Name())
		}
	}
	switch len(found) {
	case 0:
		return nil, nil, "", fmt.Errorf("%w in %s%s", ErrNoSafetensors, dir, discoveryHint(dir, ents))
	case 1:
		return found, nil, "", nil
	}
	return nil, nil, "", &FormatError{File: dir, Reason: fmt.Sprintf(
		"%d .safetensors files and no index (%s); add %s or keep one file: %s",
		len(found), IndexFile, IndexFile, strings.Join(found, ", "))}
}

func readIndex(path string) (*indexJSON, []string, error) {
	b, err := fsutil.ReadFileLimit(path, MaxJSONBytes)
	if err != nil {
		return nil, nil, &FormatError{File: path, Reason: errReason(err)}
	}
	var idx indexJSON
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, nil, &FormatError{File: path, Reason: fmt.Sprintf("invalid index JSON: %v", err)}
	}
	if len(idx.WeightMap) == 0 {
		return nil, nil, &FormatError{File: path, Reason: "index has no weight_map entries"}
	}
	set := map[string]bool{}
	for t, s := range idx.WeightMap {
		if !filepath.IsLocal(s) || !isSafetensors(s) {
			return nil, nil, &FormatError{File: path, Tensor: t, Reason: fmt.Sprintf("invalid shard name %q", s)}
		}
		set[s] = true
	}
	names := make([]string, 0, len(set))
	for s := range set {
		names = append(names, s)
	}
	sort.Strings(names)
	return &idx, names, nil
}

// readJSONObject parses a JSON object file; a missing file gives nil, nil.
func readJSONObject(path string) (map[string]any, error) {
	b, err := fsutil.ReadFileLimit(path, MaxJSONBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &FormatError{File: path, Reason: errReason(err)}
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("modelio: %s: invalid JSON: %w", path, err)
	}
	return v, nil
}

// Close closes the shard files. It is safe to call more than once.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var first error
	for _, p := range m.Shards {
		if f := m.files[p]; f != nil {
			if err := f.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// Lookup returns the tensor (supported or skipped) with the given name.
func (m *Model) Lookup(name string) (TensorInfo, bool) {
	i, ok := m.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return m.all[i], true
}

// resolve checks that t is a tensor of this model and returns its file.
func (m *Model) resolve(t TensorInfo) (TensorInfo, *os.File, error) {
	i, ok := m.byName[t.Name]
	if !ok {
		return TensorInfo{}, nil, fmt.Errorf("modelio: no tensor %q in %s", t.Name, m.Dir)
	}
	s := m.all[i]
	if s.File != t.File || s.Offset != t.Offset || s.Bytes != t.Bytes || s.DType != t.DType {
		return TensorInfo{}, nil, fmt.Errorf("modelio: tensor %q does not match the one in %s", t.Name, m.Dir)
	}
	return s, m.files[s.File], nil
}

// ReadRaw reads the raw little-endian bytes of elements [elemOffset,
// elemOffset+count) of t into dst[:count*size]. It is safe for concurrent use.
func (m *Model) ReadRaw(t TensorInfo, elemOffset, count int64, dst []byte) error {
	s, f, err := m.resolve(t)
	if err != nil {
		return err
	}
	size := int64(s.DType.Size())
	if size == 0 {
		return &UnsupportedDTypeError{File: s.File, Tensor: s.Name, DType: s.DType}
	}
	n := s.NumElements()
	if elemOffset < 0 || count < 0 || elemOffset > n || count > n-elemOffset {
		return fmt.Errorf("modelio: tensor %q: elements [%d,+%d) out of range [0,%d)", s.Name, elemOffset, count, n)
	}
	nb := count * size
	if int64(len(dst)) < nb {
		return fmt.Errorf("modelio: tensor %q: buffer of %d bytes, need %d", s.Name, len(dst), nb)
	}
	if nb == 0 {
		return nil
	}
	if _, err := f.ReadAt(dst[:nb], s.Offset+elemOffset*size); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // the file shrank after Open
		}
		return fmt.Errorf("modelio: read tensor %q from %s: %w", s.Name, s.File, err)
	}
	return nil
}

// ReadFloat32 reads elements [elemOffset, elemOffset+count) of t decoded to
// float32 into dst[:count]. scratch holds the raw bytes; when it is shorter
// than count*DType.Size() a buffer is allocated. Safe for concurrent use
// with distinct dst/scratch.
func (m *Model) ReadFloat32(t TensorInfo, elemOffset, count int64, dst []float32, scratch []byte) error {
	if !t.DType.Supported() {
		return &UnsupportedDTypeError{File: t.File, Tensor: t.Name, DType: t.DType}
	}
	if count < 0 || int64(len(dst)) < count {
		return fmt.Errorf("modelio: tensor %q: dst holds %d values, need %d", t.Name, len(dst), count)
	}
	nb := count * int64(t.DType.Size())
	if int64(len(scratch)) < nb {
		scratch = make([]byte, nb)
	}
	if err := m.ReadRaw(t, elemOffset, count, scratch); err != nil {
		return err
	}
	out, raw := dst[:count], scratch[:nb]
	switch t.DType {
	case F32:
		fp.DecodeF32(out, raw)
	case F16:
		fp.DecodeHalf(out, raw)
	case BF16:
		fp.DecodeBF16(out, raw)
	case F64:
		fp.DecodeF64(out, raw)
	}
	return nil
}

// AuxFiles lists the files (names relative to Dir, sorted) to copy next to
// a quantized artifact: the regular files of Dir (symlinks followed, no
// recursion) except the safetensors data, their index files, other weight
// formats (pytorch_model*.bin, *.pt, *.pth, *.ckpt, *.gguf, ...) and
// unfinished temporary files.
func (m *Model) AuxFiles() ([]string, error) {
	ents, err := os.ReadDir(m.Dir)
	if err != nil {
		return nil, fmt.Errorf("modelio: %w", err)
	}
	var out []string
	for _, e := range ents {
		name := e.Name()
		if isWeightFile(name) || name == outdir.MarkerFile {
			continue
		}
		st, err := os.Stat(filepath.Join(m.Dir, name))
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out, nil
}

func isWeightFile(name string) bool {
	lower := strings.ToLower(name)
	if isSafetensors(lower) || strings.HasSuffix(lower, ".safetensors.index.json") ||
		strings.HasSuffix(lower, ".bin.index.json") || strings.Contains(lower, ".tmp-") {
		return true
	}
	if strings.HasSuffix(lower, ".bin") &&
		(strings.HasPrefix(lower, "pytorch_model") || strings.HasPrefix(lower, "diffusion_pytorch_model")) {
		return true
	}
	for _, ext := range []string{".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx"} {
		if strings.HasSuffix(lower, ext) {
			return true
		}
	}
	return false
}

// SourceBytes is the total data size of Tensors (skipped tensors excluded).
func (m *Model) SourceBytes() int64 {
	var n int64
	for _, t := range m.Tensors {
		n += t.Bytes
	}
	return n
}

// NumParams is the total element count of Tensors (skipped tensors excluded).
func (m *Model) NumParams() int64 {
	var n int64
	for _, t := range m.Tensors {
		n += t.NumElements()
	}
	return n
}

// discoveryHint says where the weights are when a directory has no
// safetensors of its own: in component subfolders (a diffusers pipeline
// root: unet/, transformer/, vae/, text_encoder/), or as PyTorch pickles
// that must be converted first.
func discoveryHint(dir string, ents []os.DirEntry) string {
	var subs, pickles []string
	for _, e := range ents {
		name := e.Name()
		lower := strings.ToLower(name)
		switch {
		case e.IsDir():
			inner, err := os.ReadDir(filepath.Join(dir, name))
			if err != nil {
				continue
			}
			for _, f := range inner {
				if isSafetensors(f.Name()) && !f.IsDir() {
					subs = append(subs, name+"/")
					break
				}
			}
		case strings.HasSuffix(lower, ".bin") || strings.HasSuffix(lower, ".pt") || strings.HasSuffix(lower, ".pth") || strings.HasSuffix(lower, ".ckpt"):
			pickles = append(pickles, name)
		}
	}
	var hint string
	if len(subs) > 0 {
		hint += fmt.Sprintf("; its subfolders %s hold safetensors (a diffusers pipeline keeps one model per component): quantize each one, e.g. --model %s", strings.Join(subs, ", "), filepath.Join(dir, strings.TrimSuffix(subs[0], "/")))
	}
	if len(pickles) > 0 {
		hint += fmt.Sprintf("; %s are PyTorch pickles, which ArrowQuant does not load (they can run code): convert them to safetensors first (safetensors.torch.save_file, or the Hugging Face convert script)", strings.Join(pickles, ", "))
	}
	return hint
}
