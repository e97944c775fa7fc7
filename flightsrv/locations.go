package flightsrv

import (
	"context"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow/flight"

	"github.com/arrowquant/arrowquant/store"
)

// rotation turns the location list of successive FlightInfos, so clients
// that always take the first location spread their DoGets over the servers.
var rotation atomic.Uint64

// endpoints is a FlightInfo's one endpoint for ticket. On a store that
// several servers share (store.Locator) it lists every live server's
// advertised location: a client may DoGet the ticket from any of them.
// Elsewhere, or when the servers cannot be listed, it has no location:
// the client uses the connection it has.
func (s *Service) endpoints(ctx context.Context, ticket []byte) []*flight.FlightEndpoint {
	ep := &flight.FlightEndpoint{Ticket: &flight.Ticket{Ticket: ticket}}
	if l, ok := s.o.Store.(store.Locator); ok {
		locs, err := l.Locations(ctx)
		if err != nil {
			s.o.Logger.Warn().Err(err).Msg("cannot list the servers' locations: FlightInfo without locations")
		}
		if n := len(locs); n > 0 {
			first := int(rotation.Add(1) % uint64(n))
			for i := range n {
				ep.Location = append(ep.Location, &flight.Location{Uri: locs[(first+i)%n]})
			}
		}
	}
	return []*flight.FlightEndpoint{ep}
}
