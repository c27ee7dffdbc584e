package messages

import "testing"

// TestBudgetTokens follows one token through each way a batch gives it
// back, and checks that a full budget refuses without waiting.
func TestBudgetTokens(t *testing.T) {
	tests := []struct {
		name     string
		giveBack func(b *ToClient)
	}{
		{"Release", func(b *ToClient) { b.Release() }},
		{"Recycle", func(b *ToClient) { b.Recycle() }},
		{"Settle", func(b *ToClient) { b.Settle(); b.Settle(); b.Release() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bu := NewBudget(1)
			first, second := NewToClient(), NewToClient()
			if !bu.TryAcquire(&first.Batch) {
				t.Fatal("empty budget refused a token")
			}
			if bu.TryAcquire(&second.Batch) {
				t.Fatal("full budget handed out a second token")
			}
			tt.giveBack(first)
			if len(bu) != 0 {
				t.Fatalf("%d tokens still taken after %s", len(bu), tt.name)
			}
			if !bu.TryAcquire(&second.Batch) {
				t.Fatal("token not available again")
			}
			second.Release()
		})
	}
	t.Run("nil budget is unlimited", func(t *testing.T) {
		var bu Budget
		b := NewToClient()
		for range 3 {
			if !bu.TryAcquire(&b.Batch) {
				t.Fatal("nil budget refused")
			}
		}
		b.Release()
	})
	t.Run("Acquire gives up when done closes", func(t *testing.T) {
		bu := NewBudget(1)
		a, b := NewFromClient(), NewFromClient()
		done := make(chan struct{})
		if !bu.Acquire(&a.Batch, done) {
			t.Fatal("Acquire on an empty budget failed")
		}
		close(done)
		if bu.Acquire(&b.Batch, done) {
			t.Fatal("Acquire on a full budget succeeded after done closed")
		}
		a.Release()
		b.Release()
	})
}
