"""The forges a job's branch goes to: GitHub, GitLab, Gitea/Forgejo (docs/forge.md).

:mod:`.remotes` reads which forge and repository a remote URL names, :mod:`.hosts`
which kind of forge a host is and where its API and token are (settings only),
:mod:`.client` is the one interface the use-cases see, and :mod:`.github`,
:mod:`.gitlab`, :mod:`.gitea` speak each forge's REST API over httpx. Nothing here
runs git or reads the store.
"""
