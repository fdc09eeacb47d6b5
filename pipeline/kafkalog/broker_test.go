package kafkalog

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"lockstep/internal/needs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// kafkaLibs is the directory of Kafka's jars: $LOCKSTEP_KAFKA_LIBS, or
// /tmp/kafkajars/libs.
func kafkaLibs() string {
	if d := os.Getenv("LOCKSTEP_KAFKA_LIBS"); d != "" {
		return d
	}
	return "/tmp/kafkajars/libs"
}

// startBroker runs a single-node KRaft Kafka (broker and controller in one
// JVM) on free loopback ports for the test and returns its address.
func startBroker(t testing.TB) string {
	t.Helper()
	libs := kafkaLibs()
	if m, _ := filepath.Glob(filepath.Join(libs, "kafka_2.13-*.jar")); len(m) == 0 {
		needs.Missing(t, "Kafka jars not found in %s (set LOCKSTEP_KAFKA_LIBS)", libs)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		needs.Missing(t, "java not installed")
	}
	dir := t.TempDir()
	port, cport := freePort(t), freePort(t)
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:%[2]d
listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
advertised.listeners=PLAINTEXT://127.0.0.1:%[1]d
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
`, port, cport, filepath.Join(dir, "data"))
	cfgPath := filepath.Join(dir, "server.properties")
	log4j := filepath.Join(dir, "log4j.properties")
	must(t, os.WriteFile(cfgPath, []byte(props), 0o644))
	must(t, os.WriteFile(log4j, []byte("log4j.rootLogger=WARN, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\nlog4j.appender.stdout.layout=org.apache.log4j.PatternLayout\nlog4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"), 0o644))
	jvm := []string{"-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Dlog4j.configuration=file:" + log4j, "-cp", filepath.Join(libs, "*")}

	id := make([]byte, 16)
	rand.Read(id)
	format := exec.Command(java, append(jvm, "kafka.tools.StorageTool", "format", "-t", base64.RawURLEncoding.EncodeToString(id), "-c", cfgPath)...)
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("kafka storage format: %v\n%s", err, out)
	}
	logf, err := os.Create(filepath.Join(dir, "kafka.log"))
	must(t, err)
	srv := exec.Command(java, append(jvm, "kafka.Kafka", cfgPath)...)
	srv.Stdout, srv.Stderr = logf, logf
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no orphan if the test binary dies
	must(t, srv.Start())
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			srv.Process.Kill()
			<-done
		}
		logf.Close()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(60 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return addr
		}
		select {
		case <-done:
			out, _ := os.ReadFile(filepath.Join(dir, "kafka.log"))
			t.Fatalf("kafka exited:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("kafka did not listen within 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
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
