package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// RedisConfig configures a Redis log. Client is required.
type RedisConfig struct {
	// Client is the connection to Redis (one server or a cluster); the log does not close it.
	Client rueidis.Client
	// Prefix starts the stream's keys: <prefix>{events} (the stream) and <prefix>{events}:trimmed. If empty, "sb:".
	// The braces keep both on one slot of a Redis Cluster.
	Prefix string
	// Retention drops events older than this (approximately: Redis trims whole macro-nodes). If zero,
	// DefaultRetention.
	Retention time.Duration
	// MaxEvents bounds the stream's length (approximately). If zero, DefaultMaxEvents.
	MaxEvents int
	// Timeout bounds each call that does not block. If zero, one second.
	Timeout time.Duration
}

// Redis is a Log in a Redis stream, shared by every replica of a cluster. Event IDs are the stream's entry IDs.
//
// Gaps. A reader resuming after ID a missed events if the log trimmed an entry newer than a (Append records the
// newest entry it trimmed in a second key), or if a is not from this stream at all: the stream was
// lost (FLUSHALL, a restart without persistence) and recreated. To tell a recreated stream from the old one, its
// first entry is a genesis marker (field "genesis", never returned as an event): a reader whose position is older
// than the genesis entry is from an earlier stream. Once the genesis entry is trimmed, max-deleted-entry-id covers
// the same positions.
type Redis struct {
	// Immutable after NewRedis.
	client     rueidis.Client
	key        string
	trimmedKey string
	retention  time.Duration
	maxEvents  int
	timeout    time.Duration
}

var _ Log = (*Redis)(nil)

// maxBlockChunk bounds one XREAD BLOCK, so that a cancelled reader frees its connection promptly: rueidis cannot
// interrupt a blocking command that the server is already running.
const maxBlockChunk = time.Second

// NewRedis returns a log on cfg.Client. It does not touch Redis.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	if cfg.Client == nil {
		return nil, errors.New("presence: RedisConfig.Client is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sb:"
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	return &Redis{client: cfg.Client, key: cfg.Prefix + "{events}", trimmedKey: cfg.Prefix + "{events}:trimmed", retention: cfg.Retention, maxEvents: cfg.MaxEvents,
		timeout: cfg.Timeout}, nil
}

// appendScript appends an event, writing the genesis marker first if the stream does not exist, trims by age and
// by length (exactly, so that it knows what it removed), and records the ID of the newest entry it removed in the
// trimmed key. Usually one entry goes per append, so the trimming is O(log n).
//
// KEYS[1] stream, KEYS[2] trimmed key. ARGV: event JSON, min ID to keep (ms), max length. Returns the event's ID.
var appendScript = rueidis.NewLuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('XADD', KEYS[1], '*', 'genesis', '1') end
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
local last = nil
local old = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[2] .. '-0', '-', 'COUNT', 1)
if #old > 0 then
	last = old[1][1]
	redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2] .. '-0')
end
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then
	local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)
	last = gone[#gone][1]
	redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[3])
end
if last then redis.call('SET', KEYS[2], last) end
return id
`)

// Append implements Log.
func (r *Redis) Append(ctx context.Context, e Event) (Event, error) {
	e.ID = ""
	if e.At.IsZero() {
		e.At = time.Now()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return e, fmt.Errorf("append: %w", err)
	}
	minID := time.Now().Add(-r.retention).UnixMilli()
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	id, err := appendScript.Exec(ctx, r.client, []string{r.key, r.trimmedKey}, []string{
		string(b), strconv.FormatInt(minID, 10), strconv.Itoa(r.maxEvents),
	}).ToString()
	if err != nil {
		return e, fmt.Errorf("append: %w", err)
	}
	e.ID = id
	return e, nil
}

// Read implements Log.
func (r *Redis) Read(ctx context.Context, after string, max int, block time.Duration) ([]Event, error) {
	if max <= 0 {
		max = 100
	}
	var pos streamID
	if after != "" {
		var ok bool
		if pos, ok = parseStreamID(after); !ok {
			out, err := r.oldest(ctx, max)
			return out, errors.Join(fmt.Errorf("read after %q: %w", after, ErrGap), err)
		}
	}
	out, last, gap, err := r.readOnce(ctx, pos, after != "", max)
	pos = last
	if err != nil || gap || len(out) > 0 || block <= 0 {
		if gap {
			out, err = r.oldest(ctx, max)
			return out, errors.Join(fmt.Errorf("read after %q: %w", after, ErrGap), err)
		}
		return out, err
	}
	deadline := time.Now().Add(block)
	for {
		wait := min(time.Until(deadline), maxBlockChunk)
		if wait < time.Millisecond || ctx.Err() != nil {
			return nil, nil
		}
		entries, err := r.xread(ctx, pos, max, wait)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil
			}
			return nil, err
		}
		if len(entries) > 0 {
			// Check for a gap again: the stream may have been lost while this reader waited.
			out, pos, gap, err = r.readOnce(ctx, pos, pos != (streamID{}), max)
			if gap {
				out, err = r.oldest(ctx, max)
				return out, errors.Join(fmt.Errorf("read after %q: %w", after, ErrGap), err)
			}
			if err != nil || len(out) > 0 {
				return out, err
			}
		}
	}
}

// readOnce reads the events after pos without blocking and reports whether events after pos were lost, and the
// position of the last entry read (pos if none), to wait after.
func (r *Redis) readOnce(ctx context.Context, pos streamID, resuming bool, max int) ([]Event, streamID, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	b := r.client.B()
	res := r.client.DoMulti(ctx,
		b.Exists().Key(r.key).Build(),
		b.Xread().Count(int64(max)).Streams().Key(r.key).Id(pos.String()).Build(),
		b.XinfoStream().Key(r.key).Build(),
		b.Xrange().Key(r.key).Start("-").End("+").Count(1).Build(),
		b.Get().Key(r.trimmedKey).Build(),
	)
	exists, err := res[0].AsInt64()
	if err != nil {
		return nil, pos, false, fmt.Errorf("read: %w", err)
	}
	if exists == 0 {
		return nil, pos, resuming, nil
	}
	entries, err := xreadEntries(res[1], r.key)
	if err != nil {
		return nil, pos, false, fmt.Errorf("read: %w", err)
	}
	if resuming {
		info, err := res[2].AsMap()
		if err != nil {
			return nil, pos, false, fmt.Errorf("read: stream info: %w", err)
		}
		if id, ok := infoID(info, "last-generated-id"); ok && id.less(pos) {
			return nil, pos, true, nil // the stream never reached pos: pos is from an earlier stream
		}
		trimmed, err := res[4].ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			return nil, pos, false, fmt.Errorf("read: trimmed: %w", err)
		}
		if id, ok := parseStreamID(trimmed); ok && pos.less(id) {
			return nil, pos, true, nil
		}
		first, err := res[3].AsXRange()
		if err != nil {
			return nil, pos, false, fmt.Errorf("read: first entry: %w", err)
		}
		if len(first) == 1 && isGenesis(first[0]) {
			if g, ok := parseStreamID(first[0].ID); ok && pos.less(g) {
				return nil, pos, true, nil
			}
		}
	}
	if len(entries) > 0 {
		if id, ok := parseStreamID(entries[len(entries)-1].ID); ok {
			pos = id
		}
	}
	out, err := decodeEntries(entries)
	return out, pos, false, err
}

// xread waits up to wait for entries after pos.
func (r *Redis) xread(ctx context.Context, pos streamID, max int, wait time.Duration) ([]rueidis.XRangeEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, wait+r.timeout)
	defer cancel()
	cmd := r.client.B().Xread().Count(int64(max)).Block(max64(wait.Milliseconds(), 1)).Streams().Key(r.key).
		Id(pos.String()).Build()
	return xreadEntries(r.client.Do(ctx, cmd), r.key)
}

// oldest returns up to max of the oldest retained events.
func (r *Redis) oldest(ctx context.Context, max int) ([]Event, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	entries, err := r.client.Do(ctx, r.client.B().Xrange().Key(r.key).Start("-").End("+").Count(int64(max)+1).Build()).AsXRange()
	if err != nil {
		return nil, fmt.Errorf("read oldest: %w", err)
	}
	out, err := decodeEntries(entries)
	if len(out) > max {
		out = out[:max]
	}
	return out, err
}

func xreadEntries(res rueidis.RedisResult, key string) ([]rueidis.XRangeEntry, error) {
	m, err := res.AsXRead()
	if rueidis.IsRedisNil(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return m[key], nil
}

func isGenesis(e rueidis.XRangeEntry) bool {
	_, ok := e.FieldValues["genesis"]
	return ok
}

// decodeEntries turns stream entries into events, skipping the genesis marker.
func decodeEntries(entries []rueidis.XRangeEntry) ([]Event, error) {
	out := make([]Event, 0, len(entries))
	for _, en := range entries {
		if isGenesis(en) {
			continue
		}
		var e Event
		if err := json.Unmarshal([]byte(en.FieldValues["e"]), &e); err != nil {
			return out, fmt.Errorf("decode event %s: %w", en.ID, err)
		}
		e.ID = en.ID
		out = append(out, e)
	}
	return out, nil
}

func infoID(info map[string]rueidis.RedisMessage, field string) (streamID, bool) {
	m, ok := info[field]
	if !ok {
		return streamID{}, false
	}
	s, err := m.ToString()
	if err != nil {
		return streamID{}, false
	}
	return parseStreamID(s)
}

// streamID is a Redis stream entry ID, <ms>-<seq>.
type streamID struct{ ms, seq uint64 }

func (a streamID) less(b streamID) bool { return a.ms < b.ms || a.ms == b.ms && a.seq < b.seq }

func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}

// parseStreamID parses "<ms>-<seq>"; it comes from clients (Last-Event-ID), so anything else is refused.
func parseStreamID(s string) (streamID, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return streamID{}, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		return streamID{}, false
	}
	return streamID{ms, seq}, true
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// Newest returns the ID of the stream's newest entry, "" if the stream does not exist; see the package function
// Newest.
func (r *Redis) Newest(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	b := r.client.B()
	res := r.client.DoMulti(ctx, b.Exists().Key(r.key).Build(), b.XinfoStream().Key(r.key).Build())
	n, err := res[0].AsInt64()
	if err != nil {
		return "", fmt.Errorf("newest: %w", err)
	}
	if n == 0 {
		return "", nil
	}
	info, err := res[1].AsMap()
	if err != nil {
		return "", fmt.Errorf("newest: %w", err)
	}
	id, ok := infoID(info, "last-generated-id")
	if !ok {
		return "", errors.New("newest: stream info has no last-generated-id")
	}
	return id.String(), nil
}
