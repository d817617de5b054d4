"""mmcore-shards: write any mmcore dataset as litdata shards (``mmcore shard``) and stream them back (``shards``)."""
