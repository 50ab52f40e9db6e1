// Package kubernetes checks the manifests beside it: each decodes strictly into the official API types, and
// together they keep the invariants a zero-loss drain and a private internal listener need. It is its own module
// so that k8s.io/api stays out of the relay's go.mod; .ci/run tests it.
package kubernetes

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// manifests holds every object of the *.yaml files here.
type manifests struct {
	deployments []appsv1.Deployment
	services    []corev1.Service
	pdbs        []policyv1.PodDisruptionBudget
	policies    []networkingv1.NetworkPolicy
}

// load decodes every document of every *.yaml file strictly (an unknown or misspelt field is an error) into the
// official type for its apiVersion and kind; any other kind is an error.
func load(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var m manifests
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var tm struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s #%d: %v", f, i, err)
			}
			where := fmt.Sprintf("%s #%d (%s %s)", f, i, tm.APIVersion, tm.Kind)
			strict := func(into any) {
				if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
			}
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 Deployment":
				var d appsv1.Deployment
				strict(&d)
				m.deployments = append(m.deployments, d)
			case "v1 Service":
				var s corev1.Service
				strict(&s)
				m.services = append(m.services, s)
			case "policy/v1 PodDisruptionBudget":
				var p policyv1.PodDisruptionBudget
				strict(&p)
				m.pdbs = append(m.pdbs, p)
			case "networking.k8s.io/v1 NetworkPolicy":
				var p networkingv1.NetworkPolicy
				strict(&p)
				m.policies = append(m.policies, p)
			default:
				t.Fatalf("%s: a kind this test does not know; add it here with its invariants", where)
			}
		}
	}
	return m
}

func stripComments(doc string) string {
	var out []string
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// env returns the container's variable name, and whether it was found.
func env(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// port resolves a named or numbered container port.
func port(t *testing.T, c corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("container has no port named %q", p.StrVal)
	return 0
}

// listenPort is the port of a SWITCHBOARD_*_LISTEN value such as ":9090".
func listenPort(t *testing.T, c corev1.Container, name string) int32 {
	t.Helper()
	e, ok := env(c, name)
	if !ok {
		t.Fatalf("%s not set", name)
	}
	i := strings.LastIndexByte(e.Value, ':')
	n, err := strconv.Atoi(e.Value[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("%s=%q: no port", name, e.Value)
	}
	return int32(n)
}

func TestManifests(t *testing.T) {
	m := load(t)
	if len(m.deployments) != 1 || len(m.pdbs) != 1 || len(m.policies) != 1 {
		t.Fatalf("want one Deployment, PodDisruptionBudget and NetworkPolicy: %d, %d, %d", len(m.deployments), len(m.pdbs), len(m.policies))
	}
	d := m.deployments[0]
	pod := d.Spec.Template
	podLabels := labels.Set(pod.Labels)
	sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels)
	if !sel.Matches(podLabels) {
		t.Fatal("the Deployment's selector does not match its pods")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Fatal("fewer than two replicas: a drain then has nowhere to move tunnels")
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Fatal("rolling updates must start a new pod before stopping an old one (maxUnavailable: 0)")
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if !slices.Equal(c.Args, []string{"serve"}) || len(c.Command) != 0 {
		t.Fatalf("container runs %v %v: want the image's entrypoint with args [serve]", c.Command, c.Args)
	}

	// Readiness on /readyz, on the metrics listener.
	rp := c.ReadinessProbe
	if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/readyz" || port(t, c, rp.HTTPGet.Port) != listenPort(t, c, "SWITCHBOARD_METRICS_LISTEN") {
		t.Fatal("readiness must be GET /readyz on the metrics listener's port")
	}

	// The kubelet's SIGKILL comes after terminationGracePeriodSeconds, counted from the start of preStop: it must
	// leave the whole drain its time.
	de, _ := env(c, "SWITCHBOARD_DRAIN_TIMEOUT")
	drain, err := time.ParseDuration(de.Value)
	if err != nil {
		t.Fatalf("SWITCHBOARD_DRAIN_TIMEOUT=%q: %v", de.Value, err)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("no preStop sleep: endpoints must be removed before the drain starts")
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	const shutdown = 5 * time.Second // the listeners' shutdown after the drain (serve.go)
	if preStop <= 0 || grace <= preStop+drain+shutdown {
		t.Fatalf("terminationGracePeriodSeconds %v must exceed preStop %v + --drain-timeout %v + %v", grace, preStop, drain, shutdown)
	}

	// Secrets and the Redis URL come from a Secret, never from the manifest.
	for _, name := range []string{"SWITCHBOARD_SECRET", "SWITCHBOARD_CLUSTER_SECRET", "SWITCHBOARD_DIRECTORY"} {
		e, ok := env(c, name)
		if !ok || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Fatalf("%s must come from a secretKeyRef", name)
		}
	}

	// Every SWITCHBOARD_ variable is one serve reads.
	known := serveEnv(t)
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "SWITCHBOARD_") && !known[e.Name] {
			t.Fatalf("%s is not an environment variable of switchboard serve", e.Name)
		}
	}

	// Not root, nothing to escalate to.
	if sc := pod.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Fatal("the pod must run as non-root")
	}
	if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Fatal("the container must not escalate privileges and must have a read-only root")
	}

	// Services: the public one does not expose the internal or metrics ports; a headless one covers internal.
	internal := listenPort(t, c, "SWITCHBOARD_INTERNAL_LISTEN")
	metrics := listenPort(t, c, "SWITCHBOARD_METRICS_LISTEN")
	var headless bool
	for _, s := range m.services {
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			t.Fatalf("Service %s does not select the relay pods", s.Name)
		}
		for _, p := range s.Spec.Ports {
			target := port(t, c, p.TargetPort)
			if s.Spec.ClusterIP == corev1.ClusterIPNone {
				if target == internal {
					headless = true
				}
				continue
			}
			if target == internal || target == metrics {
				t.Fatalf("Service %s (%s) exposes port %d, which must stay private", s.Name, s.Spec.Type, target)
			}
		}
		if s.Spec.ClusterIP == corev1.ClusterIPNone && !s.Spec.PublishNotReadyAddresses {
			t.Fatalf("headless Service %s must publish not-ready addresses: a draining pod still serves forwards", s.Name)
		}
	}
	if !headless {
		t.Fatal("no headless Service for the internal listener")
	}

	// The PodDisruptionBudget covers the relay pods and lets one go at a time.
	pdb := m.pdbs[0]
	if pdb.Spec.Selector == nil || !labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(podLabels) {
		t.Fatal("the PodDisruptionBudget does not select the relay pods")
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Fatal("the PodDisruptionBudget must allow exactly one relay down at a time")
	}

	// The NetworkPolicy selects the relay pods and admits the internal port only from relay pods.
	np := m.policies[0]
	if !labels.SelectorFromSet(np.Spec.PodSelector.MatchLabels).Matches(podLabels) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Fatal("the NetworkPolicy must govern ingress to the relay pods")
	}
	var internalRule bool
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port == nil || port(t, c, *p.Port) != internal {
				continue
			}
			internalRule = true
			if len(r.From) == 0 {
				t.Fatal("the internal port is open to everyone")
			}
			for _, f := range r.From {
				if f.IPBlock != nil || f.NamespaceSelector != nil || f.PodSelector == nil ||
					!labels.SelectorFromSet(f.PodSelector.MatchLabels).Matches(podLabels) {
					t.Fatal("the internal port must admit relay pods only")
				}
			}
		}
		if len(r.Ports) == 0 {
			t.Fatal("an ingress rule without ports opens every port, the internal one included")
		}
	}
	if !internalRule {
		t.Fatal("no ingress rule for the internal port: peers could not forward")
	}
}

// serveEnv is the set of environment variables `switchboard serve --help` lists.
func serveEnv(t *testing.T) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "run", "./cmd/switchboard", "serve", "--help")
	cmd.Dir = filepath.Join("..", "..")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("switchboard serve --help: %v\n%s", err, out.String())
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$(SWITCHBOARD_[A-Z0-9_]+)`).FindAllStringSubmatch(out.String(), -1) {
		known[m[1]] = true
	}
	if len(known) < 10 {
		t.Fatalf("found only %d variables in serve --help", len(known))
	}
	return known
}
