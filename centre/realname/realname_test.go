package realname_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre/realname"
)

// A valid test number (check character computed by GB 11643 MOD 11-2).
const goodID = "11010519491231002X"

func vault(t testing.TB) *realname.Vault {
	v, err := realname.NewVault(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestNormaliseID(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{goodID, goodID, nil},
		{"11010519491231002x", goodID, nil},
		{" 11010519491231002X ", goodID, nil},
		{"110105194912310021", "", realname.ErrBadID}, // wrong check character
		{"1101051949123100", "", realname.ErrBadID},
		{"A1010519491231002X", "", realname.ErrBadID},
		{"", "", realname.ErrBadID},
	} {
		got, err := realname.NormaliseID(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("%q: %q %v, want %q %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func FuzzNormaliseID(f *testing.F) {
	f.Add(goodID)
	f.Add("x")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := realname.NormaliseID(s)
		if err != nil {
			return
		}
		if again, err := realname.NormaliseID(id); err != nil || again != id {
			t.Fatalf("normalised %q does not normalise to itself", id)
		}
	})
}

func TestMask(t *testing.T) {
	for _, tc := range []struct{ in, name, id string }{
		{"张小三", "张*三", "****002X"},
		{"李四", "李*", "****002X"},
		{"王", "*", "****002X"},
		{"欧阳娜娜", "欧**娜", "****002X"},
		{"Ada Lovelace", "A**********e", "****002X"},
	} {
		m := realname.Holder{Name: tc.in, ID: goodID}.Mask()
		if m.Name != tc.name || m.ID != tc.id {
			t.Errorf("%q: %+v, want %q %q", tc.in, m, tc.name, tc.id)
		}
	}
	if realname.MaskID("12") != "****" {
		t.Error("short id shown")
	}
}

func TestSealOpen(t *testing.T) {
	v := vault(t)
	h := realname.Holder{Name: "张小三", ID: goodID}
	s, err := v.Seal(h, []byte("ticket-1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s, []byte(goodID)) || bytes.Contains(s, []byte("张小三")) {
		t.Fatal("sealed record holds the clear text")
	}
	got, err := v.Open(s, []byte("ticket-1"))
	if err != nil || got != h {
		t.Fatalf("open: %+v %v", got, err)
	}
	if _, err := v.Open(s, []byte("ticket-2")); !errors.Is(err, realname.ErrSealed) {
		t.Fatalf("opened under another ticket: %v", err)
	}
	other, _ := realname.NewVault(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{3}, 32))
	if _, err := other.Open(s, []byte("ticket-1")); !errors.Is(err, realname.ErrSealed) {
		t.Fatalf("opened under another key: %v", err)
	}
	if _, err := v.Open(s[:5], nil); !errors.Is(err, realname.ErrSealed) {
		t.Fatal("short record opened")
	}
}

func TestIDHash(t *testing.T) {
	v := vault(t)
	if !bytes.Equal(v.IDHash(goodID), v.IDHash(goodID)) {
		t.Fatal("hash not stable")
	}
	other, _ := realname.NewVault(bytes.Repeat([]byte{9}, 32), bytes.Repeat([]byte{2}, 32))
	if bytes.Equal(v.IDHash(goodID), other.IDHash(goodID)) {
		t.Fatal("hash does not depend on the secret")
	}
}

func TestNewVault(t *testing.T) {
	k := bytes.Repeat([]byte{1}, 32)
	if _, err := realname.NewVault(k, k); err == nil {
		t.Error("same key twice accepted")
	}
	if _, err := realname.NewVault(k[:16], bytes.Repeat([]byte{2}, 32)); err == nil {
		t.Error("short key accepted")
	}
}

func TestNormaliseName(t *testing.T) {
	for _, n := range []string{"", "  ", "a\x00b", string(bytes.Repeat([]byte("字"), 31))} {
		if _, err := realname.Normalise(realname.Holder{Name: n, ID: goodID}); !errors.Is(err, realname.ErrBadName) {
			t.Errorf("%q: %v", n, err)
		}
	}
}

func TestRetention(t *testing.T) {
	end := time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)
	r := realname.Retention{Days: 7}
	if r.Due(end, end.AddDate(0, 0, 7).Add(-time.Second)) || !r.Due(end, end.AddDate(0, 0, 7)) {
		t.Fatal("7-day retention boundary wrong")
	}
	if got := (realname.Retention{}).PurgeAt(end); !got.Equal(end.AddDate(0, 0, realname.DefaultRetentionDays)) {
		t.Fatalf("default retention: %v", got)
	}
}
