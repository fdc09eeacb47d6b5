// Package kafkatest starts a throwaway single-node Apache Kafka (KRaft:
// broker and controller in one JVM) from Kafka's jars for tests, as pgtest
// does for PostgreSQL. Without the jars or Java the test is skipped, or
// failed under LOCKSTEP_REQUIRE_DOCKER=1 (internal/needs).
package kafkatest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"lockstep/internal/needs"
)

// Libs is the directory of Kafka's jars: $LOCKSTEP_KAFKA_LIBS, else the
// Makefile's /var/cache/lockstep/kafka-libs-*, else /tmp/kafkajars/libs.
func Libs() string {
	if d := os.Getenv("LOCKSTEP_KAFKA_LIBS"); d != "" {
		return d
	}
	if m, _ := filepath.Glob("/var/cache/lockstep/kafka-libs-*"); len(m) > 0 {
		return m[0]
	}
	return "/tmp/kafkajars/libs"
}

// Broker is a running broker.
type Broker struct {
	Addr    string // HOST:PORT of its PLAINTEXT listener
	Version string // Kafka's version, from its jar's name
}

// Start runs a broker on free loopback ports until t ends, and returns once
// it listens.
func Start(t testing.TB) Broker {
	t.Helper()
	return start(t, nil)
}

// StartBehindProxy runs a broker that advertises a Proxy's address, so
// every client reaches it through the proxy (Broker.Addr is the proxy's).
func StartBehindProxy(t testing.TB) (Broker, *Proxy) {
	t.Helper()
	p := listenProxy(t)
	return start(t, p), p
}

func start(t testing.TB, proxy *Proxy) Broker {
	t.Helper()
	libs := Libs()
	jars, _ := filepath.Glob(filepath.Join(libs, "kafka_2.13-*.jar"))
	if len(jars) == 0 {
		needs.Missing(t, "Kafka jars not found in %s (set LOCKSTEP_KAFKA_LIBS)", libs)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		needs.Missing(t, "java not installed")
	}
	b := Broker{Version: strings.TrimSuffix(strings.TrimPrefix(filepath.Base(jars[0]), "kafka_2.13-"), ".jar")}
	dir := t.TempDir()
	port, cport := FreePort(t), FreePort(t)
	advertised := fmt.Sprintf("127.0.0.1:%d", port)
	if proxy != nil {
		advertised = proxy.Addr()
		proxy.serve(fmt.Sprintf("127.0.0.1:%d", port))
	}
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:%[2]d
listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
advertised.listeners=PLAINTEXT://%[4]s
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=%[3]s
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
`, port, cport, filepath.Join(dir, "data"), advertised)
	cfg, log4j := filepath.Join(dir, "server.properties"), filepath.Join(dir, "log4j.properties")
	must(t, os.WriteFile(cfg, []byte(props), 0o644))
	must(t, os.WriteFile(log4j, []byte("log4j.rootLogger=WARN, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\nlog4j.appender.stdout.layout=org.apache.log4j.PatternLayout\nlog4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"), 0o644))
	jvm := []string{"-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Dlog4j.configuration=file:" + log4j, "-cp", filepath.Join(libs, "*")}
	id := make([]byte, 16)
	rand.Read(id)
	// --cluster-id=ID, not -t ID: one ID in 64 starts with '-' (base64's
	// URL alphabet), which the tool's parser then takes for an option.
	format := exec.Command(java, append(jvm, "kafka.tools.StorageTool", "format", "--cluster-id="+base64.RawURLEncoding.EncodeToString(id), "-c", cfg)...)
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("kafka storage format: %v\n%s", err, out)
	}
	logf, err := os.Create(filepath.Join(dir, "kafka.log"))
	must(t, err)
	srv := exec.Command(java, append(jvm, "kafka.Kafka", cfg)...)
	srv.Stdout, srv.Stderr = logf, logf
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphan if the test binary dies
	must(t, srv.Start())
	exited := make(chan struct{})
	go func() { srv.Wait(); close(exited) }()
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			srv.Process.Kill()
			<-exited
		}
		logf.Close()
	})
	b.Addr = advertised
	// Up: the port listens (checked every 100ms, for a minute, or until
	// the JVM exits).
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(time.Minute); ; {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil { // the broker's own port, not a proxy's
			c.Close()
			return b
		}
		if time.Now().After(deadline) {
			t.Fatal("kafka did not listen within a minute")
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(filepath.Join(dir, "kafka.log"))
			t.Fatalf("kafka exited:\n%s", out)
		case <-tick.C:
		}
	}
}

// FreePort is a loopback port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
