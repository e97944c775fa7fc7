package middleware

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	// FlightServiceName is the gRPC service name of Arrow Flight.
	FlightServiceName = "arrow.flight.protocol.FlightService"
	handshakeMethod   = "/" + FlightServiceName + "/Handshake"
	healthPrefix      = "/grpc.health.v1.Health/"

	authHeader = "authorization"

	// TokenTTL is how long a bearer token issued by basic authentication
	// stays valid.
	TokenTTL = 24 * time.Hour

	// TokenIdentity is what Identity returns for calls authenticated with
	// the static token (Config.AuthToken), which names no user.
	TokenIdentity = "token"
)

// Messages of the Unauthenticated errors, stable for clients and tests.
const (
	msgMissingBasic   = "missing authorization header: call authenticate_basic_token first"
	msgMissingToken   = "missing authorization header: send \"authorization: Bearer <token>\" (server --auth-token)"
	msgBadLogin       = "invalid username or password"
	msgBadBearer      = "invalid or expired bearer token"
	msgBadToken       = "invalid bearer token"
	msgBasicOnCall    = "Basic credentials are accepted only by Handshake: call authenticate_basic_token and send the \"authorization: Bearer ...\" header it returns"
	msgNeedBasic      = "handshake needs an \"authorization: Basic base64(user:password)\" header (authenticate_basic_token)"
	msgBadBasicHeader = "malformed Basic authorization header: expected base64(user:password)"
	msgTokenOnly      = "this server authenticates with a static bearer token (--auth-token), not user names: send \"authorization: Bearer <token>\" instead of calling authenticate_basic_token"
)

type authMode int

const (
	authNone authMode = iota
	authBasic
	authToken
)

type authenticator struct {
	mode authMode

	// basic
	users     map[string]string // user -> bcrypt hash
	dummyOnce sync.Once
	dummy     []byte // hash compared for unknown users, so they cost the same time
	tokens    *tokenStore

	// static token
	token [sha256.Size]byte
}

func newAuthenticator(c Config) (*authenticator, error) {
	a := &authenticator{}
	switch {
	case c.AuthBasicFile != "":
		users, err := LoadUsers(c.AuthBasicFile)
		if err != nil {
			return nil, err
		}
		a.mode, a.users, a.tokens = authBasic, users, newTokenStore(TokenTTL)
	case c.AuthToken != "":
		a.mode, a.token = authToken, sha256.Sum256([]byte(c.AuthToken))
	}
	return a, nil
}

// exempt reports whether a method needs no credentials.
func exempt(fullMethod string) bool { return strings.HasPrefix(fullMethod, healthPrefix) }

func (a *authenticator) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if a.mode == authNone || exempt(info.FullMethod) {
		return handler(ctx, req)
	}
	user, err := a.check(ctx)
	if err != nil {
		return nil, err
	}
	setIdentity(ctx, user)
	return handler(ctx, req)
}

func (a *authenticator) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if a.mode == authNone || exempt(info.FullMethod) {
		return handler(srv, ss)
	}
	if info.FullMethod == handshakeMethod {
		return a.handshake(ss)
	}
	user, err := a.check(ss.Context())
	if err != nil {
		return err
	}
	setIdentity(ss.Context(), user)
	return handler(srv, ss)
}

// handshake answers Flight Handshake itself (the service's own Handshake is
// never called when authentication is on).
//
// Basic mode: validates "authorization: Basic base64(user:pass)", issues a
// bearer token and returns it as "authorization: Bearer <token>" in the
// response headers (what pyarrow's authenticate_basic_token reads) and
// trailers (read by pyarrow too; arrow-go reads both), and as the payload of
// a HandshakeResponse if the client sent a HandshakeRequest.
//
// Token mode: succeeds without credentials and returns nothing, but rejects
// Basic credentials: pyarrow's authenticate_basic_token would otherwise
// return the empty pair (b"", b"") and the next call would fail with
// "Invalid metadata" instead of a useful message.
func (a *authenticator) handshake(ss grpc.ServerStream) error {
	ctx := ss.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(authHeader)
	if a.mode == authToken {
		for _, v := range vals {
			if scheme, _ := splitAuth(v); strings.EqualFold(scheme, "Basic") {
				return status.Error(codes.Unauthenticated, msgTokenOnly)
			}
		}
		return nil
	}
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, msgNeedBasic)
	}
	scheme, cred := splitAuth(vals[0])
	if !strings.EqualFold(scheme, "Basic") {
		return status.Error(codes.Unauthenticated, msgNeedBasic)
	}
	user, pass, err := decodeBasic(cred)
	if err != nil {
		return err
	}
	if err := a.validate(user, pass); err != nil {
		return err
	}
	token, err := a.tokens.issue(user)
	if err != nil {
		return status.Error(codes.Internal, "cannot issue a bearer token")
	}
	setIdentity(ctx, user)
	bearer := metadata.Pairs(authHeader, "Bearer "+token)
	if err := ss.SendHeader(bearer); err != nil {
		return err
	}
	ss.SetTrailer(bearer)
	// pyarrow and arrow-go send no HandshakeRequest (they close their side
	// at once) and read the token from the metadata. A client that does send
	// a request gets one HandshakeResponse with the token as payload. Nothing
	// is sent to the others: arrow-go's AuthenticateBasicToken calls Recv
	// once, and a message there leaves its stream (and a goroutine) open
	// until the connection closes.
	var req flight.HandshakeRequest
	if err := ss.RecvMsg(&req); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	return ss.SendMsg(&flight.HandshakeResponse{Payload: []byte(token)})
}

func splitAuth(v string) (scheme, cred string) {
	scheme, cred, _ = strings.Cut(strings.TrimSpace(v), " ")
	return scheme, strings.TrimLeft(cred, " ")
}

func decodeBasic(cred string) (user, pass string, err error) {
	raw, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		// arrow-go's client encodes without padding.
		if raw, err = base64.RawStdEncoding.DecodeString(cred); err != nil {
			return "", "", status.Error(codes.Unauthenticated, msgBadBasicHeader)
		}
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", status.Error(codes.Unauthenticated, msgBadBasicHeader)
	}
	return user, pass, nil
}

func (a *authenticator) validate(user, pass string) error {
	hash, ok := a.users[user]
	if !ok {
		// Spend the same time as for a known user.
		a.dummyOnce.Do(func() {
			cost := bcrypt.DefaultCost
			for _, h := range a.users {
				if c, err := bcrypt.Cost([]byte(h)); err == nil {
					cost = c
				}
				break
			}
			a.dummy, _ = bcrypt.GenerateFromPassword([]byte("arrowquant-no-such-user"), cost)
		})
		_ = bcrypt.CompareHashAndPassword(a.dummy, []byte(pass))
		return status.Error(codes.Unauthenticated, msgBadLogin)
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(pass)) != nil {
		return status.Error(codes.Unauthenticated, msgBadLogin)
	}
	return nil
}

// check validates the credentials of a call other than Handshake and returns
// the identity.
func (a *authenticator) check(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(authHeader)
	if len(vals) == 0 {
		if a.mode == authBasic {
			return "", status.Error(codes.Unauthenticated, msgMissingBasic)
		}
		return "", status.Error(codes.Unauthenticated, msgMissingToken)
	}
	var first error
	for _, v := range vals {
		user, err := a.checkOne(v)
		if err == nil {
			return user, nil
		}
		if first == nil {
			first = err
		}
	}
	return "", first
}

func (a *authenticator) checkOne(v string) (string, error) {
	scheme, cred := splitAuth(v)
	if !strings.EqualFold(scheme, "Bearer") {
		if a.mode == authBasic && strings.EqualFold(scheme, "Basic") {
			return "", status.Error(codes.Unauthenticated, msgBasicOnCall)
		}
		return "", status.Errorf(codes.Unauthenticated, "unsupported authorization scheme %q: expected \"Bearer <token>\"", scheme)
	}
	if a.mode == authToken {
		got := sha256.Sum256([]byte(cred))
		if subtle.ConstantTimeCompare(got[:], a.token[:]) != 1 {
			return "", status.Error(codes.Unauthenticated, msgBadToken)
		}
		return TokenIdentity, nil
	}
	user, ok := a.tokens.lookup(cred)
	if !ok {
		return "", status.Error(codes.Unauthenticated, msgBadBearer)
	}
	return user, nil
}

// tokenStore keeps the bearer tokens issued by basic authentication, keyed by
// their SHA-256 so that a lookup's timing reveals nothing about stored tokens.
type tokenStore struct {
	ttl time.Duration
	now func() time.Time

	mu        sync.Mutex
	m         map[[sha256.Size]byte]tokenEntry
	lastPurge time.Time
}

type tokenEntry struct {
	user    string
	expires time.Time
}

func newTokenStore(ttl time.Duration) *tokenStore {
	return &tokenStore{ttl: ttl, now: time.Now, m: map[[sha256.Size]byte]tokenEntry{}}
}

func (s *tokenStore) issue(user string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b[:])
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.lastPurge) > time.Minute {
		for k, e := range s.m {
			if !now.Before(e.expires) {
				delete(s.m, k)
			}
		}
		s.lastPurge = now
	}
	s.m[sha256.Sum256([]byte(tok))] = tokenEntry{user: user, expires: now.Add(s.ttl)}
	return tok, nil
}

func (s *tokenStore) lookup(tok string) (string, bool) {
	k := sha256.Sum256([]byte(tok))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[k]
	if !ok {
		return "", false
	}
	if !now.Before(e.expires) {
		delete(s.m, k)
		return "", false
	}
	return e.user, true
}
