"""The programs built on the layers below: the worker pod (`mcop worker`), the local runner
(`mcop run`) and its progress bar."""
