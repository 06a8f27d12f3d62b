"""The suite across a Ray cluster (`make fleet`, issue 18): the node-level checks run on every GPU
node as a pinned Ray actor each, their metrics come back to the driver's pytest run, and the driver
judges each node's figures against the fleet's median.

nodes: connecting and listing the nodes; runner: the per-node actor and the driver's polling loop;
fleet: what the driver makes of the nodes' metrics.json; guard: the process that ties a node's
pytest to its actor's life. Ray is imported only here, and only when --ray-address is given."""
