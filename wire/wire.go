// Package wire is ArrowQuant's Flight wire contract: the JSON of DoPut
// commands, DoGet tickets, action bodies and acknowledgements, and the
// names both sides agree on. The server (flightsrv) and the Go client
// (client) import it; it imports nothing of either, so a client does not
// pull in the server. docs/FLIGHT.md describes the same contract for
// other languages.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
)

// Action types of DoAction.
const (
	ActionQuantize       = "quantize"
	ActionValidateConfig = "validate_config"
	ActionProfiles       = "profiles"
	ActionDelete         = "delete"
	ActionStats          = "stats"
)

// SourceManifestName is a model's stored FP source manifest (servers
// started with --keep-source), relative to the model.
const SourceManifestName = "source/manifest.json"

// ActionBody is the union of the actions' JSON bodies.
type ActionBody struct {
	Model     string         `json:"model"`
	Name      string         `json:"name"`
	Profile   string         `json:"profile"`
	Config    map[string]any `json:"config"`
	Overwrite bool           `json:"overwrite"`
	Method    string         `json:"method"`
}

// PutCommand is the DoPut descriptor's command JSON.
type PutCommand struct {
	Model     string            `json:"model"`
	Profile   string            `json:"profile,omitempty"`
	Config    map[string]any    `json:"config,omitempty"`
	Overwrite bool              `json:"overwrite,omitempty"`
	Files     map[string][]byte `json:"files,omitempty"` // config.json, tokenizer files (base64 in JSON)
	// Tensors, when set, is the number of tensors the upload carries; a
	// stream that ends with fewer (a client that gave up) is refused
	// instead of committed.
	Tensors int `json:"tensors,omitempty"`
	// Calibration is calibration activations (docs/FORMAT.md) sent with
	// the upload: a file name whose extension tells the format, and its bytes.
	Calibration *CalibrationFile `json:"calibration,omitempty"`
	// Method forces one quantization method at every bit width (minmax,
	// lsq, clip, dq, q8_0); empty uses the defaults per bit width.
	Method string `json:"method,omitempty"`
}

// CalibrationFile is a calibration file carried in a command (base64 in JSON).
type CalibrationFile struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// Ticket is the DoGet ticket JSON.
type Ticket struct {
	Model      string `json:"model"`
	Tensor     string `json:"tensor,omitempty"`     // one tensor instead of the whole model
	Dequantize bool   `json:"dequantize,omitempty"` // float32 values (schema.Dequantized) instead of codes
	File       string `json:"file,omitempty"`       // one of the model's other files (config.json, report.json, ...) as a FileSchema batch
	// Format "gguf" streams the model exported as a GGUF file
	// (GGUFSchema batches); Exact and Runnable as `arrowquant export`.
	Format   string `json:"format,omitempty"`
	Exact    bool   `json:"exact,omitempty"`
	Runnable bool   `json:"runnable,omitempty"`
}

// GGUFSchema is the schema of a DoGet {"format": "gguf"} stream: the GGUF
// file's bytes in order (offset, data), then one last row with no data
// whose report holds the export report JSON.
var GGUFSchema = arrow.NewSchema([]arrow.Field{
	{Name: "offset", Type: arrow.PrimitiveTypes.Int64},
	{Name: "data", Type: arrow.BinaryTypes.Binary},
	{Name: "report", Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)

// FileSchema is the schema of a DoGet {"file": NAME} stream: one row.
var FileSchema = arrow.NewSchema([]arrow.Field{
	{Name: "name", Type: arrow.BinaryTypes.String},
	{Name: "data", Type: arrow.BinaryTypes.Binary},
}, nil)

// Ack is the app_metadata of the PutResult a DoPut sends for every
// received batch. Between acks and before the result, a Quantized message
// reports each tensor the server has finished; the call's last PutResult
// is the result JSON.
type Ack struct {
	Tensor           string `json:"tensor"`
	ElementsReceived int64  `json:"elements_received"`
	Batches          int64  `json:"batches"`
}

// Quantized is the app_metadata of the PutResult a DoPut sends when a
// tensor is quantized: how many are done and the last one's name.
type Quantized struct {
	TensorsQuantized int    `json:"tensors_quantized"`
	Tensor           string `json:"quantized"`
}

// DecodeStrict decodes exactly one JSON value into v: unknown keys, keys
// spelled in another case ("Model" for "model": encoding/json would accept
// it) and anything after the value but white space are errors.
func DecodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON value")
	}
	return exactKeys(b, reflect.TypeOf(v))
}

// exactKeys checks that every key of the JSON object b names a field of
// struct type t exactly as its json tag spells it, recursing into nested
// structs.
func exactKeys(b []byte, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(b, &obj) != nil {
		return nil // null, or not an object: Decode already judged it
	}
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	for k, raw := range obj {
		ft, ok := fields[k]
		if !ok {
			return fmt.Errorf("unknown key %.100q (keys are case-sensitive)", k)
		}
		if err := exactKeys(raw, ft); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}
