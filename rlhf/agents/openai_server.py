"""The run's OpenAI-compatible endpoint (FastAPI under uvicorn, in a thread of the driver): `/v1/chat/completions`,
`/v1/completions` and `/v1/models`. Each call names its episode by its key (`Authorization: Bearer <key>`); a call
without a live key is refused (401). It listens on loopback unless `env.agent_host` says otherwise."""

import asyncio
import threading
import time

from rlhf.agents.openai_api import (
    RequestError,
    completion_stream_chunks,
    error_body,
    parse_chat_request,
    parse_completion_request,
    stream_chunks,
)


class Endpoint:
    def __init__(self, serve, host: str):
        """`serve(key, ChatCall | TextCall) -> awaitable response dict` answers a call (raises RequestError); `host`:
        where it listens (port chosen free)."""
        import uvicorn
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, StreamingResponse

        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "policy", "object": "model", "owned_by": "rlhf"}]}

        async def answer(request: Request, parse, chunks):
            key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            try:
                try:
                    body = await request.json()
                except ValueError:
                    raise RequestError("the request body is not JSON") from None
                call = parse(body)
                response = await serve(key, call)
            except RequestError as err:
                kind = "invalid_request_error" if err.status != 401 else "authentication_error"
                return JSONResponse(error_body(str(err), err.param, kind), status_code=err.status)
            if call.stream:
                return StreamingResponse(iter(chunks(response, call.include_usage)), media_type="text/event-stream")
            return response

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await answer(request, parse_chat_request, stream_chunks)

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await answer(request, parse_completion_request, completion_stream_chunks)

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="off",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="openai-endpoint")
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the OpenAI endpoint could not start on {host}")
            time.sleep(0.01)
        self.host, self.port = host, self.server.servers[0].sockets[0].getsockname()[1]
        self.loop: asyncio.AbstractEventLoop = self.server.servers[0].get_loop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
