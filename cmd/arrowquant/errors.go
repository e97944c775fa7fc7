package main

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// dialedServer is the server URL of the command's connection, for messages.
var dialedServer string

// internalPrefixes are package names that wrap errors on their way up;
// they mean nothing to a user and are dropped from printed messages.
var internalPrefixes = []string{"modelio: ", "hfarch: ", "store: ", "local: ", "quant: ", "client: ", "kernels: ", "flightsrv: ", "outdir: ", "config: "}

// userMessage is what the CLI prints for err: server errors as the
// server's message with what to do next, without gRPC's framing, and no
// internal package names.
func userMessage(err error) string {
	msg := err.Error()
	if st, ok := status.FromError(unwrapStatus(err)); ok && st.Code() != codes.OK {
		msg = serverMessage(st)
	}
	for _, p := range internalPrefixes {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return msg
}

// unwrapStatus finds a gRPC status in err's chain (status.FromError
// only looks at the top).
func unwrapStatus(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := status.FromError(e); ok {
			return e
		}
	}
	return err
}

func serverMessage(st *status.Status) string {
	server := dialedServer
	if server == "" {
		server = "the server"
	}
	m := st.Message()
	switch st.Code() {
	case codes.Unavailable:
		if strings.Contains(m, "shutting down") {
			return fmt.Sprintf("%s is shutting down: retry when it is back", server)
		}
		return fmt.Sprintf("no server at %s (%s): start one with `make run` or `arrowquant serve`, or point --server / ARROW_QUANT_SERVER at a running one", server, firstLine(m))
	case codes.NotFound:
		return fmt.Sprintf("%s: `arrowquant ls --server %s` lists the stored models", m, server)
	case codes.AlreadyExists:
		return strings.ReplaceAll(m, `(set "overwrite": true to replace it)`, "(add --overwrite to replace it)")
	case codes.Unauthenticated:
		return fmt.Sprintf("%s (the server wants credentials: --token / ARROW_QUANT_TOKEN, or --user with ARROW_QUANT_PASSWORD)", m)
	case codes.DeadlineExceeded, codes.Canceled:
		return m
	}
	return fmt.Sprintf("server: %s", m)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	if len(s) > 160 {
		return s[:160] + "…"
	}
	return s
}
