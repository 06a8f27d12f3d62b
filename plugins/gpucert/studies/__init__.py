"""The optimization studies (`make study`, tests/studies/): what limits the node and which vLLM
settings make it faster, each point a check judged like any other. Library code: the study plan
(studies.yaml), one engine at a time across the points, the searches and the analyses."""
