// Package flightsrv is ArrowQuant's Arrow Flight service: DoPut streams FP
// weights into the quantization pipeline and commits the quantized model
// to the store; DoGet, GetFlightInfo, GetSchema and ListFlights read
// stored models; DoAction runs quantize, validate_config, profiles, delete
// and stats. docs/FLIGHT.md is the wire contract.
package flightsrv

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/flight"
)

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
}

// FileSchema is the schema of a DoGet {"file": NAME} stream: one row.
var FileSchema = arrow.NewSchema([]arrow.Field{
	{Name: "name", Type: arrow.BinaryTypes.String},
	{Name: "data", Type: arrow.BinaryTypes.Binary},
}, nil)

// Ack is the app_metadata of the PutResult sent for every received batch.
type Ack struct {
	Tensor           string `json:"tensor"`
	ElementsReceived int64  `json:"elements_received"`
	Batches          int64  `json:"batches"`
}

// parsePutDescriptor reads a DoPut descriptor: a command (PutCommand JSON)
// or a path [NAME] (server defaults).
func parsePutDescriptor(d *flight.FlightDescriptor) (PutCommand, error) {
	var c PutCommand
	if d == nil {
		return c, fmt.Errorf("DoPut needs a flight descriptor: a command {\"model\": NAME, ...} or a path [NAME]")
	}
	switch d.Type {
	case flight.DescriptorCMD:
		dec := json.NewDecoder(strings.NewReader(string(d.Cmd)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return c, fmt.Errorf("descriptor command is not valid JSON of {model, profile, config, overwrite, files, tensors, calibration}: %v", err)
		}
	case flight.DescriptorPATH:
		if len(d.Path) != 1 {
			return c, fmt.Errorf("descriptor path must be [NAME], got %d elements", len(d.Path))
		}
		c.Model = d.Path[0]
	default:
		return c, fmt.Errorf("unknown descriptor type %v", d.Type)
	}
	if c.Model == "" {
		return c, fmt.Errorf("descriptor names no model")
	}
	return c, nil
}

// modelFromDescriptor reads [NAME] or {"model": NAME} for the read calls.
func modelFromDescriptor(d *flight.FlightDescriptor) (string, error) {
	if d == nil {
		return "", fmt.Errorf("missing flight descriptor")
	}
	if d.Type == flight.DescriptorPATH {
		if len(d.Path) != 1 || d.Path[0] == "" {
			return "", fmt.Errorf("descriptor path must be [NAME]")
		}
		return d.Path[0], nil
	}
	var t Ticket
	if err := json.Unmarshal(d.Cmd, &t); err != nil || t.Model == "" {
		return "", fmt.Errorf("descriptor command must be {\"model\": NAME}")
	}
	return t.Model, nil
}

func parseTicket(b []byte) (Ticket, error) {
	var t Ticket
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil || t.Model == "" {
		return t, fmt.Errorf("ticket must be JSON {\"model\": NAME, \"tensor\"?: NAME, \"dequantize\"?: bool}: %s", string(b))
	}
	return t, nil
}
