package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/arrowquant/arrowquant/store"
)

// httpStatus is the HTTP status of a failed S3 call (0 without a response).
func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.StatusCode
	}
	return 0
}

func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// isNotFound: the key (or the upload) does not exist.
func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	switch errorCode(err) {
	case "NoSuchKey", "NotFound", "NoSuchUpload":
		return true
	}
	return httpStatus(err) == http.StatusNotFound
}

// isPrecondition: a conditional request's condition did not hold (412), or
// a concurrent conditional write won the race (409, AWS's
// ConditionalRequestConflict): either way the caller re-reads.
func isPrecondition(err error) bool {
	switch errorCode(err) {
	case "PreconditionFailed", "ConditionalRequestConflict":
		return true
	}
	s := httpStatus(err)
	return s == http.StatusPreconditionFailed || s == http.StatusConflict
}

// isUnavailable: the store cannot be reached, is overloaded or timed out
// (after the SDK's retries): the same call may work later.
func isUnavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if s := httpStatus(err); s >= 500 || s == http.StatusTooManyRequests || s == http.StatusRequestTimeout {
		return true
	}
	switch errorCode(err) {
	case "SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError":
		return true
	}
	var ne net.Error
	var oe *net.OpError
	var me *retry.MaxAttemptsError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.As(err, &me) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded)
}

// wrap names what failed and marks unreachable-store errors with
// store.ErrUnavailable (gRPC Unavailable for clients).
func wrap(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, a...)
	if isUnavailable(err) && !errors.Is(err, store.ErrUnavailable) {
		return fmt.Errorf("%s: %w: %w", msg, store.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", msg, err)
}
