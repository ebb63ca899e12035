"""The knowledge base for AI assistants: an MCP server over Streamable HTTP and stdio."""
