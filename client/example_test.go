package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/weft-sync/weft/client"
	"github.com/weft-sync/weft/protocol"
)

// A client that edits offline, survives restarts and shows who else is
// in the document.
func Example() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "ws://127.0.0.1:8080/v1/ws", client.Options{
		User:      protocol.User{Name: "Ada", Color: "#e4572e"},
		StatePath: "notes.state", // edits survive a restart of this process
		OnChange: func(e client.Event) {
			if e.Origin == client.Remote {
				for _, ch := range e.Changes {
					fmt.Printf("%s: delete %d at %d, insert %q\n", e.Doc.ID(), ch.Delete, ch.Pos, ch.Insert)
				}
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	go func() {
		for err := range c.Errors() {
			log.Print(err) // refused tokens, documents, ...
		}
	}()

	d, err := c.Open("notes")
	if err != nil {
		log.Fatal(err)
	}
	// Applied at once, connected or not.
	if err := d.Insert(0, "héllo 中 🙂\n"); err != nil {
		log.Fatal(err)
	}
	_ = d.SetPresence(5, nil, nil)

	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.WaitSynced(ctx); err != nil {
		log.Printf("not saved yet: %v (%+v)", err, d.Status())
	}
	for _, p := range d.Peers() {
		fmt.Printf("%s is at %d\n", p.User.Name, p.Cursor)
	}
}
