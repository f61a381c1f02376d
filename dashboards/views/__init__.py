"""The dashboard's pages, one script each (run by Streamlit through ``st.navigation``)."""
