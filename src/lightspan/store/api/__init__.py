"""What callers see of the store: the interface (``base.LightningStore``), its models, query and
paging rules, the request bounds (``limits``), the read formats (``span_page``, ``span_frames``)
and the HTTP client of a remote store (``client.LightningStoreClient``)."""
