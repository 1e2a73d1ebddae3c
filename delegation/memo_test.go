package delegation

import "testing"

// TestMemo checks the bound (emptied before passing max) and update.
func TestMemo(t *testing.T) {
	m := newMemo[string, int](10)
	m.put("a", 1, 6)
	m.put("b", 2, 4)
	if _, ok := m.get("a"); !ok {
		t.Fatal("a forgotten before the memo was full")
	}
	m.update("b", func(v *int) { *v = 3 })
	m.update("missing", func(v *int) { t.Error("update of a key not remembered") })
	if v, _ := m.get("b"); v != 3 {
		t.Fatalf("b = %d after update, want 3", v)
	}
	m.put("c", 3, 1) // 6 + 4 + 1 > 10: emptied first
	if _, ok := m.get("a"); ok {
		t.Fatal("the memo passed its bound")
	}
	if v, ok := m.get("c"); !ok || v != 3 {
		t.Fatal("c not remembered after emptying")
	}
}
