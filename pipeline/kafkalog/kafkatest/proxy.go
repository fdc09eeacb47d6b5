package kafkatest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// produceKey is the Kafka protocol's API key of a Produce request.
const produceKey = 0

// Proxy sits between clients and a broker that advertises the proxy's
// address, so every client connection goes through it, and can lose the
// answer to a produce request after the broker handled it: the append took
// effect, the client sees its connection break and retries. That is the
// one fault a client cannot be made to see from outside franz-go, which
// retries inside ProduceSync, and the one the idempotent producer exists
// for. It reads Kafka's framing only (a 4-byte size, then the request
// header's API key and correlation id, or the response's correlation id)
// and forwards every byte unchanged.
type Proxy struct {
	ln      net.Listener
	target  string
	loseN   atomic.Int32 // produce answers still to lose
	lost    atomic.Int32 // produce answers lost so far
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	stopped bool
	wg      sync.WaitGroup // every goroutine the proxy started
}

// listenProxy listens on a free loopback port; serve starts forwarding to
// target once the broker is up.
func listenProxy(t testing.TB) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &Proxy{ln: ln, conns: map[net.Conn]struct{}{}}
	t.Cleanup(p.close)
	return p
}

// Addr is the address clients dial and the broker advertises.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// LoseProduceAnswers makes the proxy drop the answers to the next n
// produce requests the broker answers, closing the client's connection in
// place of each. It does not read the answer, so a refusal's is dropped
// too; the conformance programs lose answers only of produces the broker
// takes (kafkalog refuses an oversize record before sending it).
func (p *Proxy) LoseProduceAnswers(n int) { p.loseN.Store(int32(n)) }

// Lost is how many produce answers the proxy has dropped.
func (p *Proxy) Lost() int { return int(p.lost.Load()) }

func (p *Proxy) serve(target string) {
	p.target = target
	p.wg.Go(func() {
		for {
			c, err := p.ln.Accept()
			if err != nil {
				return // closed
			}
			p.wg.Go(func() { p.forward(c) })
		}
	})
}

// forward joins one client connection to a new broker connection.
func (p *Proxy) forward(client net.Conn) {
	broker, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, broker) {
		return
	}
	var mu sync.Mutex
	produces := map[int32]bool{} // correlation ids of produce requests in flight
	closeBoth := func() {
		client.Close()
		broker.Close()
		p.untrack(client, broker)
	}
	p.wg.Go(func() { // requests: note which are produces
		defer closeBoth()
		for {
			frame, err := readFrame(client)
			if err != nil {
				return
			}
			if len(frame) >= 12 && int16(binary.BigEndian.Uint16(frame[4:6])) == produceKey {
				mu.Lock()
				produces[int32(binary.BigEndian.Uint32(frame[8:12]))] = true
				mu.Unlock()
			}
			if _, err := broker.Write(frame); err != nil {
				return
			}
		}
	})
	defer closeBoth()
	for { // answers: lose a produce's when asked to
		frame, err := readFrame(broker)
		if err != nil {
			return
		}
		if len(frame) >= 8 {
			id := int32(binary.BigEndian.Uint32(frame[4:8]))
			mu.Lock()
			produce := produces[id]
			delete(produces, id)
			mu.Unlock()
			if produce && p.takeLoss() {
				return // the broker handled it; the client never hears so
			}
		}
		if _, err := client.Write(frame); err != nil {
			return
		}
	}
}

func (p *Proxy) takeLoss() bool {
	for {
		n := p.loseN.Load()
		if n <= 0 {
			return false
		}
		if p.loseN.CompareAndSwap(n, n-1) {
			p.lost.Add(1)
			return true
		}
	}
}

// readFrame reads one size-prefixed Kafka frame, the size included.
func readFrame(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > 1<<30 {
		return nil, fmt.Errorf("kafka frame of %d bytes: not Kafka's framing", n)
	}
	frame := make([]byte, 4+n)
	copy(frame, size[:])
	if _, err := io.ReadFull(r, frame[4:]); err != nil {
		return nil, err
	}
	return frame, nil
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// close stops accepting, breaks every connection and waits for the
// proxy's goroutines to end.
func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.stopped = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
