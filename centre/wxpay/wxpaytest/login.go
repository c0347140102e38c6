package wxpaytest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// LoginServer is a fake of WeChat's jscode2session. Codes are minted with
// Code and work once, as wx.login codes do.
type LoginServer struct {
	*httptest.Server
	AppID, Secret string

	mu      sync.Mutex
	codes   map[string]string // code -> openid
	blocked map[string]int    // openid -> errcode to answer
	n       int
}

// NewLoginServer starts the fake, closed when t ends.
func NewLoginServer(t testing.TB, appID, secret string) *LoginServer {
	s := &LoginServer{AppID: appID, Secret: secret, codes: map[string]string{}, blocked: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Code mints a one-use login code for openid.
func (s *LoginServer) Code(openid string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	c := "code-" + randHex(8)
	s.codes[c] = openid
	return c
}

// Block makes logins of openid answer errcode (45011 rate limit, 40226
// high-risk user).
func (s *LoginServer) Block(openid string, errcode int) {
	s.mu.Lock()
	s.blocked[openid] = errcode
	s.mu.Unlock()
}

func (s *LoginServer) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path != "/sns/jscode2session" {
		w.WriteHeader(404)
		return
	}
	q := r.URL.Query()
	answer := func(code int, msg string) {
		json.NewEncoder(w).Encode(map[string]any{"errcode": code, "errmsg": msg})
	}
	switch {
	case q.Get("appid") != s.AppID:
		answer(40013, "invalid appid")
		return
	case q.Get("secret") != s.Secret:
		answer(40125, "invalid appsecret")
		return
	case q.Get("grant_type") != "authorization_code":
		answer(40002, "invalid grant_type")
		return
	}
	s.mu.Lock()
	openid, ok := s.codes[q.Get("js_code")]
	delete(s.codes, q.Get("js_code"))
	blocked := s.blocked[openid]
	s.mu.Unlock()
	switch {
	case !ok:
		answer(40029, "invalid code")
	case blocked == 45011:
		answer(45011, "api minute-quota reach limit  mustslower  retry next minute")
	case blocked == 40226:
		answer(40226, "code blocked")
	case blocked != 0:
		answer(blocked, "error")
	default:
		json.NewEncoder(w).Encode(map[string]any{"openid": openid, "session_key": "tiihtNczf5v6AKRyjwEUhQ==", "unionid": "u-" + openid})
	}
}
