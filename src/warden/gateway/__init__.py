"""The MCP gateway: a proxy that scans, pins and governs MCP tools (docs/mcp.md)."""
