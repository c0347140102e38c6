package testreq

import (
	"fmt"
	"strings"
	"testing"
)

type fakeTB struct {
	testing.TB
	fatal, skip, log string
}

func (*fakeTB) Helper()                          {}
func (f *fakeTB) Fatalf(format string, a ...any) { f.fatal = fmt.Sprintf(format, a...) }
func (f *fakeTB) Skipf(format string, a ...any)  { f.skip = fmt.Sprintf(format, a...) }
func (f *fakeTB) Logf(format string, a ...any)   { f.log = fmt.Sprintf(format, a...) }

func TestSkipfSkipsByDefaultAndFailsWhenRequired(t *testing.T) {
	for _, c := range []struct {
		env        string
		fail, skip bool
	}{{"", false, true}, {"0", false, true}, {"1", true, false}, {"yes", true, false}} {
		t.Setenv(Env, c.env)
		var f fakeTB
		Skipf(&f, "%s is not installed", "mosquitto")
		if (f.fatal != "") != c.fail || (f.skip != "") != c.skip {
			t.Errorf("%s=%q: fatal %q, skip %q", Env, c.env, f.fatal, f.skip)
		}
		if c.fail && !strings.Contains(f.fatal, "mosquitto is not installed") {
			t.Errorf("%s=%q: failure does not name what is missing: %q", Env, c.env, f.fatal)
		}
	}
}

func TestPartfLogsByDefaultAndFailsWhenRequired(t *testing.T) {
	for _, c := range []struct {
		env  string
		fail bool
	}{{"", false}, {"0", false}, {"1", true}} {
		t.Setenv(Env, c.env)
		var f fakeTB
		Partf(&f, "%s is not installed", "mosquitto_pub")
		if (f.fatal != "") != c.fail || (f.log != "") == c.fail || f.skip != "" {
			t.Errorf("%s=%q: fatal %q, log %q, skip %q", Env, c.env, f.fatal, f.log, f.skip)
		}
		if !strings.Contains(f.fatal+f.log, "mosquitto_pub is not installed") {
			t.Errorf("%s=%q: does not name what is missing: %q %q", Env, c.env, f.fatal, f.log)
		}
	}
}
