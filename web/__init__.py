"""The Tornado application: pages, REST API and TLS; thin handlers over node services."""
