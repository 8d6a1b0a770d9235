"""How tools show what they measure: JSON lines for scripts, tables that refresh in place for people."""
