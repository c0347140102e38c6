package sales

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/gated-dev/gated/centre/realname"
)

// Config configures the sales server. The zero value of every optional
// field means the default named in its comment; Validate says what is
// missing in words a person can act on.
type Config struct {
	// AppID and MchID are the mini program's appid and the merchant id; a
	// payment notification naming others is refused.
	AppID string `json:"appid"`
	MchID string `json:"mchid"`

	Events []Event `json:"events"`

	// HoldFor is how long an unpaid order holds its stock (15m). The WeChat
	// Pay order expires at the same moment, so no payment can arrive later.
	HoldFor Duration `json:"hold_for"`
	// SessionTTL is the life of a sign-in token (168h).
	SessionTTL Duration `json:"session_ttl"`
	// SweepEvery is how often expired holds are released (5s).
	SweepEvery Duration `json:"sweep_every"`
	// ReconcileEvery is how often orders stuck unpaid are queried at WeChat
	// Pay and interrupted issues and refunds resumed (1m).
	ReconcileEvery Duration `json:"reconcile_every"`
	// ReconcileAfter is how long a prepaid order waits for its notification
	// before it is queried (1m).
	ReconcileAfter Duration `json:"reconcile_after"`
	// ReconcileMaxQueries caps the WeChat Pay queries of one reconcile
	// round (100), oldest orders first; the rest wait for the next round.
	// After a rush, abandoned payments would otherwise be queried by the
	// hundred every round. The hold sweep still asks about each order once
	// as its hold ends, so no payment is dropped.
	ReconcileMaxQueries int `json:"reconcile_max_queries"`
	// FreezeBefore stops refunds and transfers this long before an event's
	// doors open (2h), so gates are not racing whitelist changes.
	FreezeBefore Duration `json:"freeze_before"`
	// TransferTTL is how long a transfer code can be accepted (24h).
	TransferTTL Duration `json:"transfer_ttl"`

	// MaxPerOrder (4), MaxPerUser (6) and MaxPerID (1) limit tickets per
	// order, per buyer per event, and per id number per event (real-name
	// events; 1 is the rule "one id, one ticket per show").
	MaxPerOrder int `json:"max_per_order"`
	MaxPerUser  int `json:"max_per_user"`
	MaxPerID    int `json:"max_per_id"`

	// StockShards is how many counters each tier's stock is split over
	// (stock.go), up to MaxStockShards: on PostgreSQL, how many orders of
	// one tier can commit at once. Default 8 on PostgreSQL, 1 on bbolt
	// (which commits one writer at a time anyway). Changing it spreads the
	// remaining stock over the new shards at the next start.
	StockShards int `json:"stock_shards"`

	// UserRate and AddrRate are purchase requests per minute allowed per
	// buyer (20) and per client address (120), with bursts UserBurst (10)
	// and AddrBurst (60). A negative rate turns the limit off.
	UserRate  float64 `json:"user_rate_per_minute"`
	UserBurst int     `json:"user_burst"`
	AddrRate  float64 `json:"addr_rate_per_minute"`
	AddrBurst int     `json:"addr_burst"`

	// ClientIPHeader names the header a trusted reverse proxy puts the
	// client's address in (X-Real-IP, or X-Forwarded-For, whose last entry
	// is taken). Empty (the default) uses the TCP peer, which behind a
	// proxy is the proxy for every buyer. Set it only behind a proxy that
	// overwrites the header, or buyers can pick their own address.
	ClientIPHeader string `json:"client_ip_header"`

	// RealNameHMACKey and RealNameKey are the two 32-byte server secrets
	// of real-name binding (hex in the config file). Required when an event
	// is real-name.
	RealNameHMACKey HexKey `json:"real_name_hmac_key"`
	RealNameKey     HexKey `json:"real_name_key"`
	// RealNameRetentionDays is how long after an event its holders' names
	// and id numbers are kept (30).
	RealNameRetentionDays int `json:"real_name_retention_days"`

	// Now is the clock (time.Now).
	Now func() time.Time `json:"-"`
}

// Event is a show on sale.
type Event struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// DoorsOpen and Ends bound the tickets' validity at the gates; Ends
	// also starts the real-name retention clock.
	DoorsOpen time.Time `json:"doors_open"`
	Ends      time.Time `json:"ends"`
	// RealName requires a holder's name and id number per ticket.
	RealName bool `json:"real_name"`
	// Rotating tickets are bound to a device key the buyer's phone posts.
	Rotating bool         `json:"rotating"`
	Types    []TicketType `json:"ticket_types"`
}

// TicketType is a kind of ticket (a zone or class) with its price tiers.
type TicketType struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Zone    string `json:"zone,omitempty"`
	Reentry bool   `json:"reentry,omitempty"`
	Tiers   []Tier `json:"tiers"`
}

// Tier is a price with its own quota and sale window (early bird, standard).
type Tier struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Price int64  `json:"price_fen"` // fen: 100 fen = 1 yuan
	Quota int    `json:"quota"`
	// OnSale and OffSale bound the sale window; zero means unbounded.
	OnSale  time.Time `json:"on_sale,omitzero"`
	OffSale time.Time `json:"off_sale,omitzero"`
}

// Duration is a time.Duration written as "15m" in JSON.
type Duration time.Duration

// UnmarshalJSON reads "90s", "15m", "2h".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"15m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d Duration) or(def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return time.Duration(d)
}

// HexKey is a secret written in hex in JSON.
type HexKey []byte

// UnmarshalJSON reads 64 hex characters.
func (k *HexKey) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil || len(v) != realname.KeySize {
		return fmt.Errorf("want %d hex characters (openssl rand -hex %d)", 2*realname.KeySize, realname.KeySize)
	}
	*k = v
	return nil
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// withDefaults returns c with every zero field at its default.
func (c Config) withDefaults() Config {
	c.HoldFor = Duration(c.HoldFor.or(15 * time.Minute))
	c.SessionTTL = Duration(c.SessionTTL.or(7 * 24 * time.Hour))
	c.SweepEvery = Duration(c.SweepEvery.or(5 * time.Second))
	c.ReconcileEvery = Duration(c.ReconcileEvery.or(time.Minute))
	c.ReconcileAfter = Duration(c.ReconcileAfter.or(time.Minute))
	c.FreezeBefore = Duration(c.FreezeBefore.or(2 * time.Hour))
	c.TransferTTL = Duration(c.TransferTTL.or(24 * time.Hour))
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxPerOrder, 4)
	def(&c.ReconcileMaxQueries, 100)
	def(&c.MaxPerUser, 6)
	def(&c.MaxPerID, 1)
	def(&c.UserBurst, 10)
	def(&c.AddrBurst, 60)
	if c.UserRate == 0 {
		c.UserRate = 20
	}
	if c.AddrRate == 0 {
		c.AddrRate = 120
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.StockShards < 0 || c.StockShards > MaxStockShards {
		errs = append(errs, fmt.Errorf("stock_shards %d: want 1 to %d (0 for the store's default)", c.StockShards, MaxStockShards))
	}
	if c.AppID == "" || c.MchID == "" {
		errs = append(errs, errors.New("appid and mchid are required: the mini program's appid and the WeChat Pay merchant id"))
	}
	realName := false
	seen := map[string]bool{}
	for i, ev := range c.Events {
		where := fmt.Sprintf("events[%d] %q", i, ev.ID)
		if !idRe.MatchString(ev.ID) {
			errs = append(errs, fmt.Errorf("%s: id must be 1-32 letters, digits, _ or -", where))
		}
		if seen[ev.ID] {
			errs = append(errs, fmt.Errorf("%s: duplicate event id", where))
		}
		seen[ev.ID] = true
		if ev.DoorsOpen.IsZero() || ev.Ends.IsZero() || !ev.Ends.After(ev.DoorsOpen) {
			errs = append(errs, fmt.Errorf("%s: doors_open and ends are required, ends after doors_open", where))
		}
		realName = realName || ev.RealName
		if len(ev.Types) == 0 {
			errs = append(errs, fmt.Errorf("%s: no ticket_types", where))
		}
		for _, tt := range ev.Types {
			if !idRe.MatchString(tt.ID) || len(tt.Tiers) == 0 {
				errs = append(errs, fmt.Errorf("%s: ticket type %q needs an id (letters, digits, _ -) and tiers", where, tt.ID))
			}
			for _, tr := range tt.Tiers {
				if !idRe.MatchString(tr.ID) || tr.Price <= 0 || tr.Quota < 0 {
					errs = append(errs, fmt.Errorf("%s: tier %s/%q needs an id, price_fen > 0 and quota >= 0", where, tt.ID, tr.ID))
				}
			}
		}
	}
	if realName {
		if len(c.RealNameHMACKey) != realname.KeySize || len(c.RealNameKey) != realname.KeySize {
			errs = append(errs, errors.New("a real-name event needs real_name_hmac_key and real_name_key, 64 hex characters each (openssl rand -hex 32)"))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) event(id string) *Event {
	for i := range c.Events {
		if c.Events[i].ID == id {
			return &c.Events[i]
		}
	}
	return nil
}

func (e *Event) tier(typ, tier string) (*TicketType, *Tier) {
	for i := range e.Types {
		if e.Types[i].ID == typ {
			for j := range e.Types[i].Tiers {
				if e.Types[i].Tiers[j].ID == tier {
					return &e.Types[i], &e.Types[i].Tiers[j]
				}
			}
			return &e.Types[i], nil
		}
	}
	return nil, nil
}
