package wxpay_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"strconv"

	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre/wxpay"
	"github.com/gated-dev/gated/centre/wxpay/wxpaytest"
)

func TestCode2Session(t *testing.T) {
	s := wxpaytest.NewLoginServer(t, "wxapp", "sekrit")
	c, err := wxpay.NewLoginClient(wxpay.LoginConfig{AppID: "wxapp", Secret: "sekrit", BaseURL: s.URL})
	if err != nil {
		t.Fatal(err)
	}
	s.Block("o-limited", 45011)
	s.Block("o-risky", 40226)
	used := s.Code("o-used")
	if _, err := c.Code2Session(context.Background(), used); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, code string
		want       error
		openid     string
	}{
		{"good", s.Code("o-alice"), nil, "o-alice"},
		{"unknown code", "nope", wxpay.ErrInvalidCode, ""},
		{"used twice", used, wxpay.ErrInvalidCode, ""},
		{"empty", "", wxpay.ErrInvalidCode, ""},
		{"rate limited", s.Code("o-limited"), wxpay.ErrRateLimited, ""},
		{"high risk", s.Code("o-risky"), wxpay.ErrHighRisk, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Code2Session(context.Background(), tc.code)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if got.OpenID != tc.openid {
				t.Fatalf("openid %q, want %q", got.OpenID, tc.openid)
			}
		})
	}
	bad, _ := wxpay.NewLoginClient(wxpay.LoginConfig{AppID: "wxapp", Secret: "wrong", BaseURL: s.URL})
	_, err = bad.Code2Session(context.Background(), s.Code("o-bob"))
	var ae *wxpay.APIError
	if !errors.As(err, &ae) || ae.Code != 40125 {
		t.Fatalf("wrong secret: %v, want errcode 40125", err)
	}
}

func TestLoginErrorHidesSecret(t *testing.T) {
	s := httptest.NewServer(http.NotFoundHandler())
	s.Close() // nothing listens there now
	c, _ := wxpay.NewLoginClient(wxpay.LoginConfig{AppID: "wxapp", Secret: "s3cr3t-value", BaseURL: s.URL})
	_, err := c.Code2Session(context.Background(), "code")
	if err == nil || strings.Contains(err.Error(), "s3cr3t-value") {
		t.Fatalf("err %v: want a failure that does not quote the secret", err)
	}
}

func TestParseSession(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"openid":"o","session_key":"k"}`, true},
		{`{"errcode":0,"openid":"o"}`, true},
		{`{"errcode":0}`, false},
		{`{"errcode":-1,"errmsg":"system error"}`, false},
		{`not json`, false},
		{``, false},
	} {
		_, err := wxpay.ParseSession([]byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok=%v", tc.body, err, tc.ok)
		}
	}
}

func FuzzParseSession(f *testing.F) {
	f.Add([]byte(`{"openid":"o","session_key":"k","unionid":"u"}`))
	f.Add([]byte(`{"errcode":40029,"errmsg":"invalid code"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := wxpay.ParseSession(b)
		if err == nil && s.OpenID == "" {
			t.Fatal("success without openid")
		}
	})
}

func newPay(t *testing.T, s *wxpaytest.PayServer, now func() time.Time) *wxpay.Pay {
	t.Helper()
	cfg := s.Config("https://example.invalid/notify", "https://example.invalid/refund-notify")
	cfg.Now = now
	p, err := wxpay.NewPay(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrepayQueryRefund(t *testing.T) {
	s := wxpaytest.NewPayServer(t)
	p := newPay(t, s, nil)
	ctx := context.Background()
	if _, err := p.QueryOrder(ctx, "S1"); !errors.Is(err, wxpay.ErrOrderNotExist) {
		t.Fatalf("query before prepay: %v", err)
	}
	rp, err := p.Prepay(ctx, wxpay.PrepayRequest{OutTradeNo: "S1", Description: "ticket", OpenID: "o-alice", Total: 12800, Expire: time.Now().Add(15 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	// paySign is the merchant's RSA signature the phone hands to WeChat.
	msg := rp.AppID + "\n" + rp.TimeStamp + "\n" + rp.NonceStr + "\n" + rp.Package + "\n"
	sig, _ := base64.StdEncoding.DecodeString(rp.PaySign)
	h := sha256.Sum256([]byte(msg))
	if err := rsa.VerifyPKCS1v15(&s.MchKey.PublicKey, crypto.SHA256, h[:], sig); err != nil {
		t.Fatalf("paySign does not verify: %v", err)
	}
	if rp.Package != "prepay_id="+rp.PrepayID || rp.SignType != "RSA" || rp.AppID != s.AppID {
		t.Fatalf("request payment %+v", rp)
	}
	tx, err := p.QueryOrder(ctx, "S1")
	if err != nil || tx.TradeState != wxpay.TradeNotPay || tx.Total != 12800 {
		t.Fatalf("query: %+v %v", tx, err)
	}
	if _, err := p.Refund(ctx, wxpay.RefundRequest{OutTradeNo: "S1", OutRefundNo: "R1", Refund: 100, Total: 12800}); err == nil {
		t.Fatal("refund of an unpaid order succeeded")
	}
	s.Pay("S1")
	tx, err = p.QueryOrder(ctx, "S1")
	if err != nil || tx.TradeState != wxpay.TradeSuccess || tx.TransactionID == "" || tx.PayerOpenID != "o-alice" {
		t.Fatalf("query after paying: %+v %v", tx, err)
	}
	for range 2 { // the same out_refund_no twice is one refund
		r, err := p.Refund(ctx, wxpay.RefundRequest{OutTradeNo: "S1", OutRefundNo: "R1", Refund: 12800, Total: 12800})
		if err != nil || r.Status != wxpay.RefundProcessing {
			t.Fatalf("refund: %+v %v", r, err)
		}
	}
	if rec, _ := s.Refund("R1"); rec.Calls != 2 || rec.Refund != 12800 {
		t.Fatalf("refund record %+v", rec)
	}
}

func TestResponseSignatureChecked(t *testing.T) {
	s := wxpaytest.NewPayServer(t)
	// A client trusting a certificate of another key refuses the answers.
	cfg := s.Config("https://example.invalid/notify", "")
	k2 := *s.PlatformCert
	k2.PublicKey = &s.MchKey.PublicKey // a certificate for the wrong key
	cfg.PlatformCerts[0] = &k2
	p, err := wxpay.NewPay(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Prepay(context.Background(), wxpay.PrepayRequest{OutTradeNo: "S2", Description: "t", OpenID: "o", Total: 1}); err == nil {
		t.Fatal("answer signed by an untrusted key accepted")
	}
}

func TestParsePaymentNotify(t *testing.T) {
	s := wxpaytest.NewPayServer(t)
	now := time.Now()
	p := newPay(t, s, func() time.Time { return now })
	p.Prepay(context.Background(), wxpay.PrepayRequest{OutTradeNo: "S3", Description: "t", OpenID: "o-bob", Total: 500})
	res, _ := s.Pay("S3")
	good := s.Notify("TRANSACTION.SUCCESS", res, now)

	tamperedBody := bytes.Replace(good.Body, []byte(`"summary"`), []byte(`"Summary"`), 1)
	wrongSerial := s.Notify("TRANSACTION.SUCCESS", res, now)
	wrongSerial.Header.Set("Wechatpay-Serial", "00DEADBEEF")
	noSig := s.Notify("TRANSACTION.SUCCESS", res, now)
	noSig.Header.Del("Wechatpay-Signature")
	// Signed, with a nonce that is not 12 bytes (wechatpay-go would panic).
	badNonce := s.Sign(bytes.Replace(good.Body, []byte(`"nonce":"`), []byte(`"nonce":"x`), 1), now)
	// Re-signed with a valid signature over a resource that does not decrypt.
	garbled := s.Sign(bytes.Replace(good.Body, []byte(`"ciphertext":"`), []byte(`"ciphertext":"AAAA`), 1), now)

	for _, tc := range []struct {
		name   string
		body   []byte
		header http.Header
		ok     bool
		why    string
	}{
		{"good", good.Body, good.Header, true, ""},
		{"tampered body", tamperedBody, good.Header, false, "verify"},
		{"unknown serial", wrongSerial.Body, wrongSerial.Header, false, "not found"},
		{"no signature", noSig.Body, noSig.Header, false, "Wechatpay-Signature"},
		{"old", s.Notify("TRANSACTION.SUCCESS", res, now.Add(-6*time.Minute)).Body, s.Notify("TRANSACTION.SUCCESS", res, now.Add(-6*time.Minute)).Header, false, "Timestamp"},
		{"from the future", nil, nil, false, "Timestamp"},
		{"does not decrypt", garbled.Body, garbled.Header, false, "decrypt"},
		{"bad nonce", badNonce.Body, badNonce.Header, false, "nonce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.body == nil {
				n := s.Notify("TRANSACTION.SUCCESS", res, now.Add(6*time.Minute))
				tc.body, tc.header = n.Body, n.Header
			}
			r := httptest.NewRequest(http.MethodPost, "/notify", bytes.NewReader(tc.body))
			r.Header = tc.header.Clone()
			tx, err := p.ParsePaymentNotify(r)
			if tc.ok {
				if err != nil || tx.OutTradeNo != "S3" || tx.Total != 500 || tx.TradeState != wxpay.TradeSuccess || tx.MchID != s.MchID || tx.PayerOpenID != "o-bob" {
					t.Fatalf("got %+v %v", tx, err)
				}
				return
			}
			if !errors.Is(err, wxpay.ErrBadNotification) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("err %v, want ErrBadNotification mentioning %q", err, tc.why)
			}
		})
	}
}

func TestParseRefundNotify(t *testing.T) {
	s := wxpaytest.NewPayServer(t)
	p := newPay(t, s, nil)
	ctx := context.Background()
	p.Prepay(ctx, wxpay.PrepayRequest{OutTradeNo: "S4", Description: "t", OpenID: "o", Total: 900})
	s.Pay("S4")
	if _, err := p.Refund(ctx, wxpay.RefundRequest{OutTradeNo: "S4", OutRefundNo: "R4", Refund: 300, Total: 900}); err != nil {
		t.Fatal(err)
	}
	res, _ := s.CompleteRefund("R4")
	n := s.Notify("REFUND.SUCCESS", res, time.Now())
	r := httptest.NewRequest(http.MethodPost, "/refund-notify", bytes.NewReader(n.Body))
	r.Header = n.Header
	got, err := p.ParseRefundNotify(r)
	if err != nil || got.OutRefundNo != "R4" || got.RefundStatus != wxpay.RefundSuccess || got.Amount.Refund != 300 {
		t.Fatalf("got %+v %v", got, err)
	}
}

func TestNewPayConfigErrors(t *testing.T) {
	k := wxpaytest.NewKeys(t)
	base := wxpay.PayConfig{MchID: k.MchID, AppID: k.AppID, MchCertSerial: k.MchSerial, MchKey: k.MchKey, APIv3Key: k.APIv3Key,
		PlatformCerts: nil, PlatformPublicKey: &k.PlatformKey.PublicKey, PlatformPublicKeyID: "PUB_KEY_ID_1", NotifyURL: "https://x/n"}
	if _, err := wxpay.NewPay(context.Background(), base); err != nil {
		t.Fatalf("public-key mode: %v", err)
	}
	for name, mut := range map[string]func(*wxpay.PayConfig){
		"no mchid":       func(c *wxpay.PayConfig) { c.MchID = "" },
		"short v3 key":   func(c *wxpay.PayConfig) { c.APIv3Key = "short" },
		"no notify url":  func(c *wxpay.PayConfig) { c.NotifyURL = "" },
		"no key":         func(c *wxpay.PayConfig) { c.MchKey = nil },
		"pubkey, no id":  func(c *wxpay.PayConfig) { c.PlatformPublicKeyID = "" },
		"base with path": func(c *wxpay.PayConfig) { c.BaseURL = "http://127.0.0.1:1/v3" },
	} {
		c := base
		mut(&c)
		if _, err := wxpay.NewPay(context.Background(), c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzParsePaymentNotify feeds signed notifications with arbitrary bodies
// (as a compromised or buggy sender could) to the verification and
// decryption path: an error or a transaction, never a panic. Its keys are
// fixed test keys in testdata: generating RSA keys in an instrumented fuzz
// worker takes minutes.
func FuzzParsePaymentNotify(f *testing.F) {
	mk, err := utils.LoadPrivateKeyWithPath("testdata/fuzz_merchant_key.pem")
	if err != nil {
		f.Fatal(err)
	}
	pk, err := utils.LoadPrivateKeyWithPath("testdata/fuzz_platform_key.pem")
	if err != nil {
		f.Fatal(err)
	}
	const keyID = "PUB_KEY_ID_FUZZ"
	apiV3 := "0123456789abcdef0123456789ABCDEF"
	p, err := wxpay.NewPay(context.Background(), wxpay.PayConfig{MchID: "1900000109", AppID: "wx1", MchCertSerial: "01", MchKey: mk,
		APIv3Key: apiV3, PlatformPublicKey: &pk.PublicKey, PlatformPublicKeyID: keyID, NotifyURL: "https://example.invalid/n"})
	if err != nil {
		f.Fatal(err)
	}
	block, _ := aes.NewCipher([]byte(apiV3))
	gcm, _ := cipher.NewGCM(block)
	ct := base64.StdEncoding.EncodeToString(gcm.Seal(nil, []byte("0123456789ab"), []byte(`{"out_trade_no":"S1","amount":{"total":1}}`), []byte("transaction")))
	f.Add([]byte(`{"resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"` + ct + `","associated_data":"transaction","nonce":"0123456789ab"}}`))
	f.Add([]byte(`{"resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"AAAA","nonce":"x"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		sig, err := utils.SignSHA256WithRSA(ts+"\nnonce\n"+string(body)+"\n", pk)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodPost, "/notify", bytes.NewReader(body))
		r.Header.Set("Wechatpay-Timestamp", ts)
		r.Header.Set("Wechatpay-Nonce", "nonce")
		r.Header.Set("Wechatpay-Serial", keyID)
		r.Header.Set("Wechatpay-Signature", sig)
		tx, err := p.ParsePaymentNotify(r)
		if err == nil && tx.OutTradeNo == "" {
			t.Fatal("accepted without out_trade_no")
		}
	})
}

// Merchants set up since 2024 verify with the WeChat Pay public key and
// its id instead of platform certificates.
func TestPublicKeyMode(t *testing.T) {
	s := wxpaytest.NewPayServer(t)
	cfg := s.Config("https://example.invalid/notify", "")
	cfg.PlatformCerts = nil
	cfg.PlatformPublicKey, cfg.PlatformPublicKeyID = &s.PlatformKey.PublicKey, s.PlatformSerial
	p, err := wxpay.NewPay(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Prepay(context.Background(), wxpay.PrepayRequest{OutTradeNo: "S9", Description: "t", OpenID: "o", Total: 1}); err != nil {
		t.Fatal(err)
	}
	res, _ := s.Pay("S9")
	n := s.Notify("TRANSACTION.SUCCESS", res, time.Now())
	r := httptest.NewRequest(http.MethodPost, "/notify", bytes.NewReader(n.Body))
	r.Header = n.Header
	if tx, err := p.ParsePaymentNotify(r); err != nil || tx.OutTradeNo != "S9" {
		t.Fatalf("%+v %v", tx, err)
	}
	n.Header.Set("Wechatpay-Serial", "PUB_KEY_ID_OTHER")
	r = httptest.NewRequest(http.MethodPost, "/notify", bytes.NewReader(n.Body))
	r.Header = n.Header
	if _, err := p.ParsePaymentNotify(r); !errors.Is(err, wxpay.ErrBadNotification) {
		t.Fatalf("another key id accepted: %v", err)
	}
}
