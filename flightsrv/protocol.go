// Package flightsrv is ArrowQuant's Arrow Flight service: DoPut streams FP
// weights into the quantization pipeline and commits the quantized model
// to the store; DoGet, GetFlightInfo, GetSchema and ListFlights read
// stored models; DoAction runs quantize, validate_config, profiles, delete
// and stats. docs/FLIGHT.md is the wire contract.
package flightsrv

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/flight"

	"github.com/arrowquant/arrowquant/store"
	"github.com/arrowquant/arrowquant/wire"
)

// parsePutDescriptor reads a DoPut descriptor: a command (wire.PutCommand JSON)
// or a path [NAME] (server defaults).
func parsePutDescriptor(d *flight.FlightDescriptor) (wire.PutCommand, error) {
	var c wire.PutCommand
	if d == nil {
		return c, fmt.Errorf("DoPut needs a flight descriptor: a command {\"model\": NAME, ...} or a path [NAME]")
	}
	switch d.Type {
	case flight.DescriptorCMD:
		if err := wire.DecodeStrict(d.Cmd, &c); err != nil {
			return c, fmt.Errorf("descriptor command is not valid JSON of {model, profile, config, overwrite, files, tensors, calibration, method}: %v", err)
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
	if err := store.ValidateName(c.Model); err != nil {
		return c, err
	}
	if c.Tensors < 0 {
		return c, fmt.Errorf("descriptor command: \"tensors\" must not be negative, got %d", c.Tensors)
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
	var t struct {
		Model string `json:"model"`
	}
	if err := wire.DecodeStrict(d.Cmd, &t); err != nil || t.Model == "" {
		return "", fmt.Errorf("descriptor command must be {\"model\": NAME}")
	}
	return t.Model, nil
}

func parseTicket(b []byte) (wire.Ticket, error) {
	var t wire.Ticket
	if err := wire.DecodeStrict(b, &t); err != nil || t.Model == "" {
		return t, fmt.Errorf("ticket must be JSON {\"model\": NAME, \"tensor\"?: NAME, \"dequantize\"?: bool, \"file\"?: NAME}: %.200q", string(b))
	}
	return t, nil
}
