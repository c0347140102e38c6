package ticketpage_test

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/ticketpage"
)

// Serve the ticket page beside other routes, and print one ticket's link.
func Example() {
	dir, _ := os.MkdirTemp("", "centre")
	defer os.RemoveAll(dir)
	if err := centre.Init(dir, nil); err != nil {
		log.Fatal(err)
	}
	c, err := centre.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	token, _ := centre.ReadAPIToken(dir)
	tp, err := ticketpage.New(c, ticketpage.Options{Dir: dir, Token: token})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	tp.Register(mux)
	ts, _ := c.Issue(centre.IssueRequest{Event: "expo", Count: 1, Rotating: true})
	link := tp.Path(ts[0].ID) // "/t/" + ticket id + "?k=" + access secret: send it to the holder
	fmt.Println(strings.HasPrefix(link, "/t/"+ts[0].ID.String()+"?k="), len(link))
	// Output: true 52
}
