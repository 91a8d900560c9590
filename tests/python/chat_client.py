"""Drives the Chat API simulator with Google's official Python client
(google-apps-chat, REST transport), as a Chat app would: create, get,
update (patch), list with pages, delete. Run by tests/python_client.rs with
SIM_URL and KEY_FILE set; prints one line per step and exits non-zero on the
first failure."""

import os
import sys
from urllib.parse import urlparse

from google.api_core import exceptions
from google.apps import chat_v1
from google.apps.chat_v1.services.chat_service.transports.rest import ChatServiceRestTransport
from google.oauth2 import service_account
from google.protobuf import field_mask_pb2

SCOPE = "https://www.googleapis.com/auth/chat.bot"


def main() -> None:
    url = urlparse(os.environ["SIM_URL"])
    credentials = service_account.Credentials.from_service_account_file(
        os.environ["KEY_FILE"], scopes=[SCOPE]
    )
    transport = ChatServiceRestTransport(
        host=url.netloc, url_scheme=url.scheme, credentials=credentials
    )
    client = chat_v1.ChatServiceClient(transport=transport)
    space = "spaces/PYTHON"

    created = client.create_message(
        parent=space,
        message=chat_v1.Message(text="Hello from the official client"),
        message_id="client-python-1",
    )
    assert created.name.startswith(space + "/messages/"), created.name
    assert created.client_assigned_message_id == "client-python-1"
    print("create ok:", created.name)

    # An enum travels as an integer (enum-encoding=int) and must be understood.
    or_fail = chat_v1.CreateMessageRequest.MessageReplyOption.REPLY_MESSAGE_OR_FAIL
    reply = client.create_message(
        request=chat_v1.CreateMessageRequest(
            parent=space,
            message=chat_v1.Message(
                text="In the same thread",
                thread=chat_v1.Thread(name=created.thread.name),
            ),
            message_reply_option=or_fail,
        )
    )
    assert reply.thread.name == created.thread.name, (reply.thread.name, created.thread.name)
    print("reply ok:", reply.thread.name)

    got = client.get_message(name=f"{space}/messages/client-python-1")
    assert got.text == "Hello from the official client", got.text
    print("get ok")

    updated = client.update_message(
        message=chat_v1.Message(name=created.name, text="Edited"),
        update_mask=field_mask_pb2.FieldMask(paths=["text"]),
    )
    assert updated.text == "Edited", updated.text
    assert client.get_message(name=created.name).text == "Edited"
    print("patch ok")

    client.create_message(parent=space, message=chat_v1.Message(text="third"))
    pages = client.list_messages(
        request=chat_v1.ListMessagesRequest(parent=space, page_size=1)
    )
    texts = [m.text for m in pages]
    assert texts == ["Edited", "In the same thread", "third"], texts
    print("list ok:", len(texts), "messages over pages of one")

    client.delete_message(name=created.name)
    try:
        client.get_message(name=created.name)
    except exceptions.NotFound:
        print("delete ok")
    else:
        sys.exit("the deleted message is still there")

    try:
        client.create_message(
            parent=space, message=chat_v1.Message(text="again"), message_id="client-python-1x"
        )
        client.create_message(
            parent=space, message=chat_v1.Message(text="dup"), message_id="client-python-1x"
        )
    except exceptions.Conflict:  # 409, as from the real API
        print("duplicate ID refused ok")
    else:
        sys.exit("a duplicate client ID was accepted")

    try:
        client.create_message(
            request=chat_v1.CreateMessageRequest(
                parent=space,
                message=chat_v1.Message(
                    text="nowhere", thread=chat_v1.Thread(name=space + "/threads/NOPE")
                ),
                message_reply_option=or_fail,
            )
        )
    except exceptions.NotFound:
        print("unknown thread refused ok")
    else:
        sys.exit("REPLY_MESSAGE_OR_FAIL accepted an unknown thread")


if __name__ == "__main__":
    main()
